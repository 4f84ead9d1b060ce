/* Numbers, money and times as the pages print them. Money is integer nanoTON everywhere; TON is
 * only ever a way of printing it. */

import { el } from "./dom.js";

export const NANO_PER_TON = 1000000000;

const grouping = new Intl.NumberFormat("en-US");

export function formatInt(n) {
  return grouping.format(Number(n) || 0);
}

/* nanoTON (an integer) as TON, exact, without trailing zeros: 1500000000 -> "1.5". */
export function formatTon(nanoton) {
  const n = Math.round(Number(nanoton) || 0);
  const abs = Math.abs(n);
  const frac = abs % NANO_PER_TON;
  let text = grouping.format((abs - frac) / NANO_PER_TON);
  if (frac) text += "." + String(frac).padStart(9, "0").replace(/0+$/, "");
  return (n < 0 ? "-" : "") + text;
}

/* Whether text is an amount of TON the API takes exactly: digits with at most 9 decimals. Such
 * amounts go to the API as this text, so no float ever rounds them. */
export function isTonAmount(text) {
  return /^\d{1,10}(\.\d{1,9})?$/.test(text);
}

/* nanoTON as the text of an amount field (no grouping), "" for none (null). */
export function tonFieldValue(nanoton) {
  return nanoton === null || nanoton === undefined ? "" : formatTon(nanoton).replace(/,/g, "");
}

/* A TON amount the API gave as a number (e.g. minimum_balance_ton) in nanoTON. */
export function tonToNano(ton) {
  return Math.round(Number(ton) * NANO_PER_TON);
}

export function formatUsd(value) {
  return new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 })
    .format(value);
}

export const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const shortDateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

export function timeNode(iso, short) {
  if (!iso) return document.createTextNode("never");
  const date = new Date(iso);
  if (isNaN(date.getTime())) return document.createTextNode(String(iso));
  return el("time", { dateTime: date.toISOString(), title: date.toISOString() },
    (short ? shortDateTime : dateTime).format(date));
}

export function formatDuration(ms) {
  ms = Number(ms) || 0;
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}
