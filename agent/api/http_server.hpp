// mltapd's one HTTP listener: /metrics (every registered prometheus::Collectable) and the routes
// of agent/api (routes.hpp), on Boost.Beast/Asio (private to http_server.cpp).
//
// Built so that hostile clients cannot stall it (docs/http.md):
//  - one event-loop thread owns every socket; an idle or slow connection costs a descriptor and a
//    few KiB, never a thread, so thousands of them do not delay anyone else;
//  - deadlines, not per-read timeouts: the whole request head must arrive within header_timeout
//    (also the keep-alive idle limit), the body within body_timeout, the answer be taken within
//    write_timeout; a byte-a-second (slowloris) client is cut off at the deadline;
//  - connections capped per client address and in total, refused with 429/503 at accept;
//  - request heads over max_header_bytes get 431, bodies over the route's limit 413, malformed
//    requests 400, unknown paths 404, wrong methods 405; a missed deadline closes the connection;
//  - handlers run on small thread pools, never on the event loop, one pool per kind so none
//    delays another: routes without a body (/metrics, /healthz), routes that take one (the
//    webhook: a burst of alerts is parsed there), and the read API (which may wait for a fresh
//    snapshot);
//  - the read API (Access::read_api) needs a bearer token unless the listen address is loopback
//    and the caller's uid is allowed (every uid unless a list is set, and no token is set).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/api/listen_address.hpp"

namespace prometheus {
class Collectable;
}

namespace mltap::api {

using namespace std::chrono_literals;

// One request as a handler sees it (head and complete body).
struct HttpRequest {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // target without the query
  std::vector<std::pair<std::string, std::string>> params;   // the query, percent-decoded
  std::vector<std::pair<std::string, std::string>> headers;  // as sent
  std::vector<std::string> matches;  // the route pattern's match: [0] the path, [1..] groups
  std::string body;
  std::string peer;  // the client's address

  bool has_param(std::string_view name) const;
  std::string param(std::string_view name) const;  // "" when absent (the first one otherwise)
  bool has_header(std::string_view name) const;    // names case-insensitive
  std::string header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // close the connection after this answer

  void set_content(std::string b, std::string type) {
    body = std::move(b);
    content_type = std::move(type);
  }
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponse&)>;

// Who may call a route.
enum class Access {
  open,      // anyone who can connect: /metrics, /healthz (Prometheus), the webhook (own token)
  read_api,  // the read API: a bearer token, unless loopback without a configured token
};

struct RouteOptions {
  Access access = Access::open;
  // Largest body taken; 0: none (a request with a body gets 413).
  std::size_t max_body_bytes = 0;
  // Runs once the head is read, before any of the body is: an answer refuses the request (the
  // connection is then closed, so an unread body is never parsed as the next request).
  std::function<std::optional<HttpResponse>(const HttpRequest&)> before_body;
  // The answer when the body turns out larger than max_body_bytes while it is read.
  std::function<HttpResponse()> body_too_large;
};

struct HttpLimits {
  std::chrono::milliseconds header_timeout = 10s;  // whole request head; keep-alive idle too
  std::chrono::milliseconds body_timeout = 30s;    // whole body
  std::chrono::milliseconds write_timeout = 10s;   // whole answer
  std::size_t max_header_bytes = 16 * 1024;        // request line and headers
  std::size_t max_connections = 4096;
  // Per client: a remote address; on loopback an address and the local user owning the client's
  // socket, so that one local account cannot use up the slots of every local client.
  std::size_t max_connections_per_address = 128;
  int backlog = 1024;           // the kernel caps it at net.core.somaxconn
  int handler_threads = 2;      // routes without a body: /metrics, /healthz
  int body_threads = 2;         // routes that take a body: the webhook
  int read_api_threads = 2;     // Access::read_api routes
};

// What the server refused or cut off, since start (mltap_http_* metrics).
struct HttpServerStats {
  std::uint64_t connections_open = 0;
  std::uint64_t connections_accepted = 0;
  std::uint64_t refused_per_address = 0;  // over max_connections_per_address
  std::uint64_t refused_total = 0;        // over max_connections
  std::uint64_t timed_out = 0;            // a deadline passed (head, body or answer)
  std::uint64_t bad_requests = 0;         // 400
  std::uint64_t too_large = 0;            // 413 and 431
  std::uint64_t unauthorized = 0;         // read API without a valid token
};

class HttpServer {
 public:
  explicit HttpServer(ListenAddress address, HttpLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void add_collectable(std::shared_ptr<prometheus::Collectable> c);
  // Renders every collectable (and the server's own mltap_http_* metrics) in the text format.
  std::string render_metrics() const;

  // The bearer token Access::read_api routes require (then also on loopback). Without one they
  // are open on a loopback listen address and refused (403) on any other. Before start().
  void set_read_token(std::string token);
  // On a loopback listen address, only these local users (the uid owning the client's socket,
  // from the kernel's sock_diag) may use the read API without the token; others need the token
  // (or get 403 when none is set). Unset: every local user. Before start().
  void set_loopback_uids(std::vector<unsigned> uids);
  // Whether the read API asks for a token (a token is set, or the address is not loopback).
  bool read_api_needs_token() const noexcept;

  // Routes: `pattern` is a regular expression the whole path must match (ECMAScript). Register
  // every route before start().
  void get(const std::string& pattern, HttpHandler handler, RouteOptions options = {});
  void post(const std::string& pattern, HttpHandler handler, RouteOptions options = {});

  // Binds and starts serving on a background thread; false with `error` if the bind failed.
  bool start(std::string& error);
  void stop();
  int bound_port() const noexcept;
  HttpServerStats stats() const;
  const HttpLimits& limits() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and "localhost" (what the default read-API access depends on).
bool is_loopback_host(const std::string& host);

// The uid owning the local TCP socket connected from client_addr:client_port to
// server_addr:server_port (the kernel's inet_diag), or nullopt if there is none.
std::optional<unsigned> local_peer_uid(const std::string& client_addr, unsigned short client_port,
                                       const std::string& server_addr, unsigned short server_port);

}  // namespace mltap::api
