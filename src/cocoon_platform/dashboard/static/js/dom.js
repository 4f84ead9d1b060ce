/* Building and updating the page. Data from the API goes on the page as text (textContent, text
 * nodes), never as markup. */

export function $(id) {
  return document.getElementById(id);
}

/* el("td", {className: "num"}, "text", childNode): text children become text nodes; props may hold
 * `dataset` and `attrs` objects besides plain properties. */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "attrs") for (const [k, v] of Object.entries(value)) node.setAttribute(k, v);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.appendChild(typeof child === "string" || typeof child === "number"
      ? document.createTextNode(String(child)) : child);
  }
  return node;
}

export function setText(id, text) {
  const node = $(id);
  if (node) node.textContent = text;
  return node;
}

export function show(id, visible) {
  const node = typeof id === "string" ? $(id) : id;
  if (node) node.hidden = !visible;
  return node;
}

/* A message element that is hidden while it has nothing to say. */
export function showMessage(id, text) {
  const node = $(id);
  if (!node) return;
  node.textContent = text || "";
  node.hidden = !text;
}

/* Said by screen readers through the page's polite live region. */
export function announce(text) {
  const live = $("live");
  if (!live) return;
  live.textContent = "";
  window.setTimeout(() => { live.textContent = text; }, 50);
}

export function clearChildren(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}
