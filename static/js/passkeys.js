// Passkeys on the portal pages (issue 18). Progressive: every form this
// script drives is hidden in the HTML and only shown here, where WebAuthn
// exists; without JavaScript the pages keep password + code.
//
// A form marked data-passkey="sign-in" or "register" asks its
// data-options URL for the ceremony (with the form's CSRF token), lets
// the browser and authenticator answer, puts the answer in the form's
// hidden fields and submits the form normally (Post/Redirect/Get).
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  function toBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeIds(list) {
    (list || []).forEach(function (c) {
      c.id = toBuffer(c.id);
    });
  }

  async function ceremony(form) {
    var body = new URLSearchParams();
    body.set("csrf", form.elements.csrf.value);
    var res = await fetch(form.dataset.options, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!res.ok) {
      throw new Error(res.status === 401 ? "reauth" : "options");
    }
    return res.json();
  }

  async function register(options) {
    var pk = options.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    pk.user.id = toBuffer(pk.user.id);
    decodeIds(pk.excludeCredentials);
    var cred = await navigator.credentials.create({ publicKey: pk });
    return {
      id: cred.id,
      rawId: toText(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toText(cred.response.attestationObject),
        clientDataJSON: toText(cred.response.clientDataJSON),
      },
      extensions: cred.getClientExtensionResults(),
    };
  }

  async function signIn(options) {
    var pk = options.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    decodeIds(pk.allowCredentials);
    // A button press, not the autofill ("conditional") flow the options
    // name: the person chose to use a passkey.
    var cred = await navigator.credentials.get({ publicKey: pk });
    var handle = cred.response.userHandle;
    return {
      id: cred.id,
      rawId: toText(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toText(cred.response.authenticatorData),
        clientDataJSON: toText(cred.response.clientDataJSON),
        signature: toText(cred.response.signature),
        userHandle: handle ? toText(handle) : null,
      },
      extensions: cred.getClientExtensionResults(),
    };
  }

  function say(form, text) {
    var status = form.querySelector("[data-passkey-status]");
    if (status) {
      status.textContent = text;
      status.hidden = false;
    }
  }

  document.querySelectorAll("[data-passkey-only]").forEach(function (el) {
    el.hidden = false;
  });

  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    form.hidden = false;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (typeof form.reportValidity === "function" && !form.reportValidity()) {
        return;
      }
      try {
        var started = await ceremony(form);
        var answer =
          form.dataset.passkey === "register"
            ? await register(started.options)
            : await signIn(started.options);
        form.elements.ceremony_id.value = started.ceremony_id;
        form.elements.credential.value = JSON.stringify(answer);
        // submit() sends the form without running this handler again.
        form.submit();
      } catch (e) {
        if (e && e.message === "reauth") {
          say(form, "For this change, sign in again first.");
        } else if (e && e.name === "NotAllowedError") {
          say(form, "The passkey was not used. Try again when you are ready.");
        } else {
          say(form, "This browser could not use a passkey here. Try again, or use your password and code.");
        }
      }
    });
  });
})();
