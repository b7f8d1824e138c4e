// Passkeys (WebAuthn) on the pages: add one on /account, sign in with one on /login/passkey,
// and confirm a password login with one on the code step. Served by this service under a CSP
// of script-src 'self' and connect-src 'self'; the pages work without it (their passkey
// buttons stay hidden, and a note says they need JavaScript).
//
// The options come from the service as JSON (WebAuthn Level 3 toJSON form: binary fields are
// base64url text) and the credential goes back the same way. The browser's own
// PublicKeyCredential.parse*OptionsFromJSON and toJSON are used when it has them, else the
// conversions below.
"use strict";

(() => {
  const CSRF_COOKIE = "csrf_access_token";

  const toBuffer = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let index = 0; index < binary.length; index += 1) {
      bytes[index] = binary.charCodeAt(index);
    }
    return bytes.buffer;
  };

  const toText = (buffer) => {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const withIds = (descriptors) =>
    (descriptors || []).map((descriptor) => ({ ...descriptor, id: toBuffer(descriptor.id) }));

  const creationOptions = (json) => {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: toBuffer(json.challenge),
      user: { ...json.user, id: toBuffer(json.user.id) },
      excludeCredentials: withIds(json.excludeCredentials),
    };
  };

  const requestOptions = (json) => {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: toBuffer(json.challenge),
      allowCredentials: withIds(json.allowCredentials),
    };
  };

  const credentialJSON = (credential) => {
    if (typeof credential.toJSON === "function") {
      return credential.toJSON();
    }
    const response = credential.response;
    const json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      if (typeof response.getTransports === "function") {
        json.response.transports = response.getTransports();
      }
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      if (response.userHandle) {
        json.response.userHandle = toText(response.userHandle);
      }
    }
    return json;
  };

  // The session's CSRF token, echoed on unsafe requests (the cookie scripts may read).
  const csrfHeaders = () => {
    const prefix = `${CSRF_COOKIE}=`;
    const cookie = document.cookie.split("; ").find((item) => item.startsWith(prefix));
    return cookie ? { "X-CSRF-Token": decodeURIComponent(cookie.slice(prefix.length)) } : {};
  };

  class Refused extends Error {
    constructor(message, code) {
      super(message);
      this.code = code;
    }
  }

  const postJSON = async (url, body) => {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, application/problem+json",
        ...csrfHeaders(),
      },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : null;
      throw new Refused(
        detail || `The service refused the request (${response.status}).`,
        data && data.code,
      );
    }
    return data;
  };

  // What the user reads when the ceremony fails.
  const explain = (error) => {
    if (error instanceof Refused) {
      return error.message;
    }
    if (error && error.name === "NotAllowedError") {
      return "No passkey was used: the request was cancelled or timed out. Try again.";
    }
    if (error && error.name === "InvalidStateError") {
      return "This device already holds a passkey of your account.";
    }
    if (error && error.name === "SecurityError") {
      return "This site's address cannot use passkeys.";
    }
    return "Something went wrong with the passkey. Try again.";
  };

  const show = (status, error) => {
    if (!status) {
      return;
    }
    status.replaceChildren(document.createTextNode(explain(error)));
    if (error instanceof Refused && error.code === "FRESH_TOKEN_REQUIRED") {
      const link = document.createElement("a");
      link.href = "/login";
      link.id = "passkey-login-again";
      link.textContent = "Log in again";
      status.append(" ", link, ", then come back to this page.");
    }
    status.hidden = false;
    status.focus();
  };

  const optionsOf = (body) => (body && body.publicKey ? body.publicKey : body);

  // Run one ceremony at a time per control; the control is disabled while it runs.
  const busy = async (control, status, work) => {
    if (control.disabled) {
      return;
    }
    control.disabled = true;
    if (status) {
      status.hidden = true;
    }
    try {
      await work();
    } catch (error) {
      show(status, error);
      control.disabled = false;
    }
  };

  const statusOf = (element) => document.getElementById(element.dataset.status || "");

  const register = (form) => {
    const button = form.querySelector("button[type=submit]");
    const status = statusOf(form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(button, status, async () => {
        const options = optionsOf(await postJSON(form.dataset.optionsUrl));
        const credential = await navigator.credentials.create({
          publicKey: creationOptions(options),
        });
        const name = form.elements.namedItem("passkey_name").value.trim();
        const body = { credential: credentialJSON(credential) };
        if (name) {
          body.name = name;
        }
        await postJSON(form.dataset.url, body);
        window.location.assign(form.dataset.next);
      });
    });
  };

  const signIn = (button) => {
    const status = statusOf(button);
    button.addEventListener("click", () => {
      busy(button, status, async () => {
        const options = optionsOf(await postJSON(button.dataset.optionsUrl));
        const credential = await navigator.credentials.get({
          publicKey: requestOptions(options),
          mediation: "optional",
        });
        await postJSON(button.dataset.url, {
          credential: credentialJSON(credential),
          session: "cookie",
        });
        window.location.assign(button.dataset.next);
      });
    });
  };

  // The code step: the assertion goes into the form, which the page then sends as usual.
  const secondFactor = (form) => {
    const button = form.querySelector("button[type=submit]");
    const status = statusOf(form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(button, status, async () => {
        const mfaToken = form.elements.namedItem("mfa_token").value;
        const options = optionsOf(
          await postJSON(form.dataset.optionsUrl, { mfa_token: mfaToken }),
        );
        const credential = await navigator.credentials.get({
          publicKey: requestOptions(options),
        });
        form.elements.namedItem("credential").value = JSON.stringify(credentialJSON(credential));
        form.submit();
      });
    });
  };

  const start = () => {
    const controls = document.querySelectorAll("[data-passkey]");
    if (controls.length === 0) {
      return;
    }
    for (const note of document.querySelectorAll("[data-without-script]")) {
      note.hidden = true;
    }
    if (!window.PublicKeyCredential || !navigator.credentials) {
      const unsupported = document.getElementById("passkey-unsupported");
      if (unsupported) {
        unsupported.hidden = false;
      }
      return;
    }
    const kinds = { register, signin: signIn, mfa: secondFactor };
    for (const control of controls) {
      const wire = kinds[control.dataset.passkey];
      if (!wire) {
        continue;
      }
      wire(control);
      control.hidden = false;
      const focused = control.matches("[autofocus]")
        ? control
        : control.querySelector("[autofocus]");
      if (focused && document.activeElement === document.body) {
        focused.focus();
      }
    }
  };

  start();
})();
