// @ts-check
// Typed element look-ups for the pages: a missing or mistyped element is a bug in the page's
// HTML, reported with its id instead of a later "cannot read properties of null".

/**
 * The element with `id`, checked to be a `type` (HTMLElement by default).
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {{new (...args: any[]): T}} [type]
 * @returns {T}
 */
export function byId(id, type) {
  const el = document.getElementById(id);
  const want = type ?? HTMLElement;
  if (!(el instanceof want)) throw new Error(`page element #${id} is missing or not a ${want.name}`);
  return /** @type {T} */ (el);
}

/**
 * Set the text of the element with `id`.
 * @param {string} id
 * @param {string} text
 */
export function setText(id, text) {
  byId(id).textContent = text;
}
