// A minimal SPA client of Clinic Auth (no framework, no build step).
//
// The access token lives in memory only (never localStorage, where any
// script on the page could read it); the refresh token is the HttpOnly
// cookie the API sets, which this script never sees. Every call that
// needs the cookie (login, refresh, logout) uses credentials: "include".
//
// Where the API is: ?auth=https://auth.example-clinic.com, else the
// default below. The API's CORS_ORIGINS must list this page's origin; on
// another site also REFRESH_COOKIE_SAMESITE=none (https only).
"use strict";

const AUTH = new URLSearchParams(location.search).get("auth") || "http://localhost:8000";

let accessToken = null;
let refreshTimer = null;

const $ = (id) => document.getElementById(id);

function show(message) {
  $("status").textContent = message;
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (options.bearer && accessToken) headers.authorization = `Bearer ${accessToken}`;
  const response = await fetch(`${AUTH}/api/auth/${path}`, {
    method: options.method || "GET",
    credentials: "include",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    // The API's error shape: {"error": {"code", "message"}}.
    const error = new Error(body && body.error ? body.error.message : response.statusText);
    error.code = body && body.error ? body.error.code : String(response.status);
    throw error;
  }
  return body;
}

// Keeps the new access token and refreshes a minute before it expires.
function keep(tokens) {
  accessToken = tokens.access_token;
  const expiresAt = new Date(Date.now() + tokens.expires_in * 1000);
  $("expires").textContent = expiresAt.toLocaleTimeString();
  $("expires").dateTime = expiresAt.toISOString();
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, Math.max(tokens.expires_in - 60, 5) * 1000);
}

function signedOut(message) {
  accessToken = null;
  clearTimeout(refreshTimer);
  $("signed-in").hidden = true;
  $("sign-in").hidden = false;
  show(message);
}

async function whoAmI() {
  const me = await api("me", { bearer: true });
  show(`Signed in as ${me.name} (${me.role}).`);
  $("signed-in").hidden = false;
  $("sign-in").hidden = true;
}

async function refresh() {
  try {
    keep(await api("refresh", { method: "POST" }));
    await whoAmI();
    show(`${$("status").textContent} Refreshed.`);
  } catch (error) {
    // The sign-in ended (signed out elsewhere, expired, revoked).
    signedOut(`Signed out: ${error.message}`);
  }
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const answer = await api("login", {
      method: "POST",
      body: { email: $("email").value, password: $("password").value },
    });
    if (!answer.access_token) {
      // Two-step sign-in (mfa_required) or enrolment: out of this example.
      show("This account needs a second step: see README, Two-step sign-in.");
      return;
    }
    keep(answer);
    await whoAmI();
  } catch (error) {
    show(`Sign-in failed: ${error.message}`);
  }
});

$("refresh").addEventListener("click", refresh);

$("sign-out").addEventListener("click", async () => {
  try {
    await api("logout", { method: "POST" });
    signedOut("Signed out.");
  } catch (error) {
    show(`Sign-out failed: ${error.message}`);
  }
});

// A returning visitor may still hold a refresh cookie: try it once,
// quietly (no cookie is the usual case).
api("refresh", { method: "POST" })
  .then(async (tokens) => {
    keep(tokens);
    await whoAmI();
  })
  .catch(() => signedOut("Signed out."));
