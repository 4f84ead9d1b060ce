/* Cocoon Platform's pages: plain ES modules (static/js/), same-origin JSON API only, no bundler.
 *
 * Rules kept throughout: data from the API is put on the page as text (never innerHTML); the API
 * key lives in sessionStorage only (never localStorage, never a URL).
 */

import { wireCopyButtons } from "./js/copy.js";
import { initDashboard } from "./js/dashboard.js";
import { initLanding } from "./js/landing.js";
import { showFlash } from "./js/session.js";

wireCopyButtons();
showFlash();
const page = document.body.dataset.page;
if (page === "landing") initLanding();
else if (page === "dashboard") initDashboard();
