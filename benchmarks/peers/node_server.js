// The classic tutorial hub: Node's http server and an EventEmitter, one listener per response.
const http = require("http");
const { EventEmitter } = require("events");

const bus = new EventEmitter();
bus.setMaxListeners(0);
const port = Number(process.argv[2] || 8001);

http
  .createServer((req, res) => {
    if (req.method === "GET" && req.url.startsWith("/events")) {
      res.writeHead(200, {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        Connection: "keep-alive",
      });
      res.write(":\n\n");
      const send = (data) => res.write(`data: ${data}\n\n`);
      bus.on("message", send);
      req.on("close", () => bus.off("message", send));
    } else if (req.method === "POST" && req.url === "/publish") {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        bus.emit("message", body);
        res.writeHead(200, { "Content-Length": 2 });
        res.end("ok");
      });
    } else {
      res.writeHead(404, { "Content-Length": 0 });
      res.end();
    }
  })
  .listen(port, "127.0.0.1", 4096); // the backlog the other servers get (default 511)
