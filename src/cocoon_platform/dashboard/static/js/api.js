/* The platform's JSON API on this origin. A 401 on a signed-in call signs the tab out. */

import { showMessage } from "./dom.js";
import { getKey, isSigningOut, signOut } from "./session.js";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

function errorMessage(data, response) {
  if (data && data.error && typeof data.error.message === "string" && data.error.message) {
    return data.error.message;
  }
  if (data && Array.isArray(data.detail) && data.detail.length && data.detail[0].msg) {
    return String(data.detail[0].msg);
  }
  if (response.status === 429) return "Too many requests; please wait a moment and try again.";
  if (response.status >= 500) return "The platform had a problem (HTTP " + response.status + "). Please try again.";
  return "Request failed (HTTP " + response.status + ").";
}

function requestInit(options) {
  const headers = { Accept: options.accept || "application/json" };
  const init = { method: options.method || "GET", headers, cache: "no-store", credentials: "same-origin" };
  if (options.signal) init.signal = options.signal;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  if (options.auth) {
    const key = getKey();
    if (!key) {
      signOut("Please sign in.");
      throw new ApiError("Not signed in", 401);
    }
    headers.Authorization = "Bearer " + key;
  }
  return init;
}

/* A fetch (or a stream read) the page cancelled itself. */
export function isAbort(error) {
  return Boolean(error) && error.name === "AbortError";
}

/* fetch; options: method, body (JSON), auth (send the stored key), accept, signal. Resolves to the
 * response when it is ok; otherwise throws an ApiError with the platform's message (a 401 on a
 * signed-in call signs the tab out), or the AbortError of a cancelled call. */
export async function request(path, options = {}) {
  const init = requestInit(options);
  let response;
  try {
    response = await window.fetch(path, init);
  } catch (e) {
    throw isAbort(e) ? e : new ApiError("Could not reach the platform. Check your connection and try again.", 0);
  }
  if (response.ok) return response;
  const data = await response.json().catch(() => null);
  const message = errorMessage(data, response);
  if (response.status === 401 && options.auth) {
    signOut("You have been signed out: " + message + ". Sign in again with a valid key.");
  }
  throw new ApiError(message, response.status);
}

/* The JSON of a call (null for none); see request. */
export async function api(path, options = {}) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  return response.json().catch(() => null);
}

/* A catch handler showing an error in element `id`; errors raised while signing out need none. */
export function report(id) {
  return (error) => {
    if (isSigningOut()) return;
    showMessage(id, error && error.message ? error.message : "Something went wrong.");
  };
}
