/* Buttons with data-copy="ID" copy the text of element ID; where the clipboard is refused, the text
 * is selected for copying by hand. */

import { $, announce, el } from "./dom.js";

function legacyCopy(text) {
  return new Promise((resolve, reject) => {
    const area = el("textarea", { value: text, readOnly: true, className: "offscreen" });
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    if (ok) resolve(); else reject(new Error("copy refused"));
  });
}

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text).catch(() => legacyCopy(text));
  }
  return legacyCopy(text);
}

export function wireCopyButtons() {
  document.addEventListener("click", (event) => {
    const button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) return;
    const source = $(button.dataset.copy);
    if (!source) return;
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    copyText(source.textContent).then(() => {
      button.textContent = "Copied";
      announce("Copied to the clipboard");
    }, () => {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Press Ctrl+C";
    }).then(() => {
      window.setTimeout(() => { button.textContent = label; }, 2000);
    });
  });
}
