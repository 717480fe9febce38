// The sign-in panel, shown only once the server has answered 401 (open mode never sees it),
// and the header's "Sign out". The token is checked with the server before it is kept.

import { checkToken } from "./api.js";

const $ = (id) => document.getElementById(id);

export class SignIn {
  /**
   * @param {import("./auth.js").Auth} auth
   * @param {object} [options]
   * @param {() => void} [options.onSignedOut]  what to do after signing out (the app reloads)
   */
  constructor(auth, { onSignedOut = () => {} } = {}) {
    this.auth = auth;
    this.onSignedOut = onSignedOut;
    this.el = {
      panel: $("signin"),
      form: $("signin-form"),
      heading: $("signin-heading"),
      intro: $("signin-intro"),
      token: $("signin-token"),
      remember: $("signin-remember"),
      error: $("signin-error"),
      button: $("signin-button"),
      signout: $("signout"),
    };
    this.el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.el.token.addEventListener("input", () => this.showError(""));
    this.el.signout.addEventListener("click", () => this.signOut());
    auth.onChange((type, detail) => {
      if (type === "required") this.show(detail);
      if (type === "signed-in") this.hide();
      this.renderHeader();
    });
    this.renderHeader();
  }

  get visible() {
    return !this.el.panel.hidden;
  }

  show({ expired = false } = {}) {
    this.el.intro.textContent = expired
      ? "The server no longer accepts the token this page was using. Sign in again to carry on."
      : "This opstream server needs an access token. Ask its operator for one.";
    const wasHidden = this.el.panel.hidden;
    this.el.panel.hidden = false;
    document.body.dataset.auth = "signin";
    if (wasHidden) {
      this.el.remember.checked = false;
      this.el.token.value = "";
      this.showError("");
      this.el.token.focus();
    }
  }

  hide() {
    this.el.panel.hidden = true;
    this.el.token.value = "";
    delete document.body.dataset.auth;
  }

  showError(message) {
    this.el.error.textContent = message;
    this.el.error.hidden = !message;
    if (message) this.el.token.setAttribute("aria-invalid", "true");
    else this.el.token.removeAttribute("aria-invalid");
  }

  async submit() {
    const token = this.el.token.value.trim();
    if (!token) {
      this.showError("Enter your access token.");
      this.el.token.focus();
      return;
    }
    this.el.button.disabled = true;
    this.el.button.textContent = "Signing in…";
    try {
      const answer = await checkToken(token);
      if (!answer.ok) {
        this.showError(answer.message);
        this.el.token.select();
        this.el.token.focus();
        return;
      }
      this.auth.signIn(token, { remember: this.el.remember.checked });
    } finally {
      this.el.button.disabled = false;
      this.el.button.textContent = "Sign in";
    }
  }

  signOut() {
    this.auth.signOut();
    this.onSignedOut();
  }

  renderHeader() {
    this.el.signout.hidden = !this.auth.token;
    this.el.signout.title = this.auth.remembered
      ? "Forget the token on this device"
      : "Forget the token in this tab";
  }
}
