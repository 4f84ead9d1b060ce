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

export function errorMessage(data, response) {
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

/* The request init for a call: method, JSON body, the stored key when `auth`. */
export function requestInit(options) {
  const headers = { Accept: "application/json" };
  const init = { method: options.method || "GET", headers, cache: "no-store", credentials: "same-origin" };
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

/* The error for a refused answer, signing the tab out when its key no longer works. */
export function refusal(data, response, auth) {
  const message = errorMessage(data, response);
  if (response.status === 401 && auth) {
    signOut("You have been signed out: " + message + ". Sign in again with a valid key.");
  }
  return new ApiError(message, response.status);
}

/* A fetch (or a stream read) the page cancelled itself. */
export function isAbort(error) {
  return Boolean(error) && error.name === "AbortError";
}

export const UNREACHABLE = "Could not reach the platform. Check your connection and try again.";

/* fetch JSON; options: method, body (JSON), auth (send the stored key). */
export async function api(path, options = {}) {
  const init = requestInit(options);
  let response;
  try {
    response = await window.fetch(path, init);
  } catch (e) {
    throw new ApiError(UNREACHABLE, 0);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  throw refusal(data, response, options.auth);
}

/* A catch handler showing an error in element `id`; errors raised while signing out need none. */
export function report(id) {
  return (error) => {
    if (isSigningOut()) return;
    showMessage(id, error && error.message ? error.message : "Something went wrong.");
  };
}
