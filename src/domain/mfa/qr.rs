//! The QR code of an `otpauth://` URI, drawn by the binary as SVG: no
//! external service ever sees the secret it carries, and the page needs
//! no script to show it.

use qrcode::render::svg;
use qrcode::types::QrError;
use qrcode::{EcLevel, QrCode};
use secrecy::{ExposeSecret, SecretString};

/// Pixels a side at the least: comfortably scanned from a screen.
const MIN_SIDE: u32 = 200;

/// An SVG document (with its XML declaration) showing `uri` as a QR code,
/// with the quiet zone scanners need around it. Error correction M: about
/// 15 % of the code may be unreadable (glare on a screen) and a URI of the
/// usual length still fits a small code. Fails only for a text longer than
/// a QR code holds (an APP_NAME or email of some thousand characters).
pub fn qr_svg(uri: &SecretString) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(uri.expose_secret(), EcLevel::M)?;
    Ok(code
        .render::<svg::Color>()
        .min_dimensions(MIN_SIDE, MIN_SIDE)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_is_a_whole_qr_code_of_the_uri() {
        let uri = SecretString::from(
            "otpauth://totp/Clinic%20Auth:jane@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Clinic%20Auth&algorithm=SHA1&digits=6&period=30",
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        // The size the encoder chose for this URI: modules plus a quiet
        // zone of 4 on each side, each module a whole number of pixels.
        let modules = QrCode::with_error_correction_level(uri.expose_secret(), EcLevel::M)
            .unwrap()
            .width() as u32;
        let side = modules + 8;
        let pixels = MIN_SIDE.div_ceil(side) * side;
        assert!(
            svg.contains(&format!(r#"width="{pixels}" height="{pixels}""#)),
            "{modules} modules: {svg}"
        );
        assert!(
            !svg.contains("GEZDGNBV"),
            "the secret is drawn, not written"
        );
        // A longer URI takes a larger code.
        let longer = SecretString::from(format!("{}&x={}", uri.expose_secret(), "a".repeat(200)));
        let larger = QrCode::with_error_correction_level(longer.expose_secret(), EcLevel::M)
            .unwrap()
            .width() as u32;
        assert!(larger > modules);
        assert!(qr_svg(&SecretString::from("x".repeat(5000))).is_err());
    }
}
