// Adds the cross-origin isolation headers for hosts that cannot send them (e.g. GitHub Pages; a
// static Hugging Face Space sends them itself, see README.md). Multi-threaded onnxruntime-web
// needs SharedArrayBuffer, which browsers only give to cross-origin isolated pages:
// https://web.dev/articles/coop-coep
// app.js registers this worker and reloads the page once so the headers apply.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  // Only this bundle's own files: everything the page loads is same-origin (no CDN).
  if (new URL(request.url).origin !== self.location.origin) return;
  // Chromium throws on this combination when the request is re-issued from a worker.
  if (request.cache === "only-if-cached" && request.mode !== "same-origin") return;
  event.respondWith(
    fetch(request).then((response) => {
      if (response.status === 0) return response; // opaque: headers cannot be changed
      const headers = new Headers(response.headers);
      headers.set("Cross-Origin-Opener-Policy", "same-origin");
      headers.set("Cross-Origin-Embedder-Policy", "require-corp");
      headers.set("Cross-Origin-Resource-Policy", "same-origin");
      return new Response(response.body, {
        status: response.status, statusText: response.statusText, headers,
      });
    }),
  );
});
