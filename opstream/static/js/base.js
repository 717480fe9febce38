// Where the dashboard is served from: "/" standalone, "/lro/" when a host application
// mounts opstream under /lro (DESIGN.md "Embedding"). The API lives beside index.html, so
// every request and stream URL is resolved against the page's own folder, never the origin.

export const BASE = typeof document === "undefined" ? "/" : new URL(".", document.baseURI).pathname;

/** An API path ("/operations/…") as a URL under the dashboard's base ("/lro/operations/…"). */
export function apiPath(path) {
  return BASE + path.replace(/^\//, "");
}
