// Keyboard and screen-reader help shared by every screen (no inline scripts: the CSP forbids them).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // After a refused save the page comes back with the reasons: put the focus on the first
  // field marked invalid (its message is tied to it by aria-describedby), else on the message.
  const invalid = document.querySelector('main [aria-invalid="true"]');
  if (invalid) {
    invalid.focus();
    return;
  }
  const alert = document.querySelector("main .error[role=alert], main .field-error[role=alert]");
  if (alert) {
    if (!alert.hasAttribute("tabindex")) alert.setAttribute("tabindex", "-1");
    alert.focus();
  }
});
