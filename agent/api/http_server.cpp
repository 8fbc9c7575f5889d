#include "agent/api/http_server.hpp"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>
#include "core/log.hpp"

#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view q) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view part = q.substr(0, amp);
    if (!part.empty()) {
      const auto eq = part.find('=');
      if (eq == std::string_view::npos) {
        out.emplace_back(percent_decode(part), "");
      } else {
        out.emplace_back(percent_decode(part.substr(0, eq)), percent_decode(part.substr(eq + 1)));
      }
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

HttpResponse error_response(int status, const std::string& message, bool close) {
  HttpResponse r;
  r.status = status;
  r.close = close;
  r.set_content(message + "\n", "text/plain; charset=utf-8");
  return r;
}

struct Route {
  http::verb method;
  std::regex pattern;
  HttpHandler handler;
  RouteOptions options;
};

}  // namespace

bool HttpRequest::has_param(std::string_view name) const {
  return std::any_of(params.begin(), params.end(), [&](const auto& p) { return p.first == name; });
}

std::string HttpRequest::param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return {};
}

bool HttpRequest::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& h) { return iequals(h.first, name); });
}

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return {};
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  const auto a = asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

std::optional<unsigned> local_peer_uid(const std::string& client_addr, unsigned short client_port,
                                       const std::string& server_addr, unsigned short server_port) {
  boost::system::error_code ec;
  const auto c = asio::ip::make_address(client_addr, ec);
  if (ec) return std::nullopt;
  const auto srv = asio::ip::make_address(server_addr, ec);
  if (ec || c.is_v4() != srv.is_v4()) return std::nullopt;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;  // one exact socket, not a dump
  msg.req.sdiag_family = c.is_v4() ? AF_INET : AF_INET6;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0u;
  // The client's own socket: its local end is the client's address, its remote end ours.
  msg.req.id.idiag_sport = htons(client_port);
  msg.req.id.idiag_dport = htons(server_port);
  if (c.is_v4()) {
    const auto a = c.to_v4().to_bytes();
    const auto b = srv.to_v4().to_bytes();
    std::memcpy(msg.req.id.idiag_src, a.data(), a.size());
    std::memcpy(msg.req.id.idiag_dst, b.data(), b.size());
  } else {
    const auto a = c.to_v6().to_bytes();
    const auto b = srv.to_v6().to_bytes();
    std::memcpy(msg.req.id.idiag_src, a.data(), a.size());
    std::memcpy(msg.req.id.idiag_dst, b.data(), b.size());
  }
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return std::nullopt;
  timeval tv{0, 200000};  // the kernel answers at once; never hang the event loop on it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::optional<unsigned> uid;
  if (::sendto(fd, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) ==
      static_cast<ssize_t>(sizeof msg)) {
    alignas(nlmsghdr) char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); n > 0 && NLMSG_OK(h, static_cast<unsigned>(n));
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) break;  // NLMSG_ERROR: no such socket
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) break;
      uid = reinterpret_cast<const inet_diag_msg*>(NLMSG_DATA(h))->idiag_uid;
      break;
    }
  }
  ::close(fd);
  return uid;
}

namespace {

class Connection;

// What a connection counts against in max_connections_per_address: its address, and on loopback
// also the local user owning the client's socket (sock_diag). Every local client comes from
// 127.0.0.1: keyed by address alone, one local account holding the cap would shut out every other
// local client (the Prometheus and Alertmanager on this host among them).
struct ClientKey {
  asio::ip::address address;
  std::int64_t uid = -1;  // -1: not loopback, or the kernel did not say
  bool operator<(const ClientKey& o) const {
    return address != o.address ? address < o.address : uid < o.uid;
  }
};

// The server's state, shared by the connections (HttpServer::Impl is private to the class).
struct ServerCore {
  // Declared before the io_context: connections still queued in it when it is destroyed
  // unregister from these in their destructors.
  mutable std::mutex mutex;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables;
  std::map<ClientKey, std::size_t> per_address;
  std::size_t open = 0;

  ListenAddress address;
  HttpLimits limits;
  std::vector<Route> routes;
  std::string read_token;
  std::vector<unsigned> loopback_uids;  // empty: every local user
  bool loopback = false;
  int port = 0;

  std::atomic<std::uint64_t> accepted{0}, refused_per_address{0}, refused_total{0}, timed_out{0},
      bad_requests{0}, too_large{0}, unauthorized{0};

  asio::thread_pool handler_pool;
  asio::thread_pool body_pool;
  asio::thread_pool read_api_pool;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  asio::steady_timer accept_retry{ioc};
  std::thread thread;
  bool started = false;

  ServerCore(ListenAddress a, HttpLimits l)
      : address(std::move(a)),
        limits(l),
        handler_pool(static_cast<std::size_t>(std::max(1, l.handler_threads))),
        body_pool(static_cast<std::size_t>(std::max(1, l.body_threads))),
        read_api_pool(static_cast<std::size_t>(std::max(1, l.read_api_threads))) {}

  void accept();
  void on_accept(tcp::socket socket);
  void release(const ClientKey& peer) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = per_address.find(peer);
    if (it != per_address.end() && --it->second == 0) per_address.erase(it);
    --open;
  }
  HttpResponse authorize(const Route& route, const HttpRequest& req, const tcp::endpoint& remote,
                         const tcp::endpoint& local);
};

// One client connection: read a head (deadline), route it, read the body (deadline, limit),
// hand the request to a pool, write the answer (deadline), and again while keep-alive holds.
// Every socket operation runs on the connection's strand of the event loop.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(ServerCore& server, tcp::socket socket, ClientKey peer, tcp::endpoint remote, tcp::endpoint local)
      : server_(server), stream_(std::move(socket)), peer_(std::move(peer)), remote_(remote), local_(local) {}
  ~Connection() { server_.release(peer_); }

  // Everything of a connection runs on its strand, from its first read on.
  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_head(); });
  }

 private:
  void read_head() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.limits.max_header_bytes));
    // The real body limit is the route's, set once the route is known; the route (or the
    // webhook's own checks) answers an oversized Content-Length before any body is read.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    stream_.expires_after(server_.limits.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_head(ec);
                            });
  }

  void on_head(beast::error_code ec) {
    if (ec) {
      // At a deadline the stream has already closed the socket: nothing can be answered.
      if (ec == beast::error::timeout) {
        ++server_.timed_out;
        return;
      }
      if (ec == http::error::end_of_stream || ec == asio::error::eof ||
          ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
        return;
      }
      if (ec == http::error::header_limit) {
        ++server_.too_large;
        return reply(error_response(431, "request head larger than " +
                                             std::to_string(server_.limits.max_header_bytes) + " bytes",
                                    true));
      }
      ++server_.bad_requests;
      return reply(error_response(400, "malformed request: " + ec.message(), true));
    }
    const auto& head = parser_->get();
    request_ = HttpRequest{};
    request_.method = std::string(head.method_string());
    request_.target = std::string(head.target());
    const auto q = request_.target.find('?');
    request_.path = request_.target.substr(0, q);
    if (q != std::string::npos) request_.params = parse_query(std::string_view(request_.target).substr(q + 1));
    for (const auto& f : head) request_.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    request_.peer = peer_.address.to_string();
    keep_alive_ = head.keep_alive();
    const bool has_body = !parser_->is_done();

    route_ = nullptr;
    bool path_known = false;
    std::smatch m;
    for (const auto& r : server_.routes) {
      if (!std::regex_match(request_.path, m, r.pattern)) continue;
      path_known = true;
      if (r.method == head.method()) {
        route_ = &r;
        request_.matches.assign(m.begin(), m.end());
        break;
      }
    }
    // Refusals before the body close the connection when a body follows (it is never read).
    if (!route_) {
      if (path_known) {
        auto r = error_response(405, "method " + request_.method + " not allowed on " + request_.path, has_body);
        return reply(std::move(r));
      }
      return reply(error_response(404, "no such path: " + request_.path, has_body));
    }
    if (auto refused = server_.authorize(*route_, request_, remote_, local_); refused.status != 200) {
      refused.close |= has_body;
      return reply(std::move(refused));
    }
    if (route_->options.before_body) {
      if (auto refused = route_->options.before_body(request_)) {
        if (refused->status == 413) ++server_.too_large;
        refused->close = true;
        return reply(std::move(*refused));
      }
    }
    if (!has_body) return dispatch();
    const std::size_t max = route_->options.max_body_bytes;
    const auto length = parser_->content_length();
    if (max == 0 || (length && *length > max)) return body_too_large();
    parser_->body_limit(max);
    stream_.expires_after(server_.limits.body_timeout);
    // A client that asked (curl does, for bodies over 1 KiB) waits for this before sending.
    if (iequals(request_.header("Expect"), "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code e, std::size_t) {
        if (!e) self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code e, std::size_t) {
      self->on_body(e);
    });
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::body_limit) return body_too_large();
    if (ec == beast::error::timeout) {  // the socket is closed already
      ++server_.timed_out;
      return;
    }
    if (ec) {
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
          ec == http::error::partial_message || ec == asio::error::operation_aborted) {
        return;
      }
      ++server_.bad_requests;
      return reply(error_response(400, "malformed request body: " + ec.message(), true));
    }
    request_.body = parser_->release().body();
    dispatch();
  }

  void body_too_large() {
    ++server_.too_large;
    HttpResponse r = route_ && route_->options.body_too_large
                         ? route_->options.body_too_large()
                         : error_response(413, "request body larger than " +
                                                   std::to_string(route_ ? route_->options.max_body_bytes : 0) +
                                                   " bytes",
                                          true);
    r.close = true;  // the rest of the body is never read
    reply(std::move(r));
  }

  // Runs the handler on a pool, never on the event loop; the answer comes back to the strand.
  void dispatch() {
    stream_.expires_never();  // the handler's time is not the client's fault
    auto& pool = route_->options.access == Access::read_api ? server_.read_api_pool
                 : route_->options.max_body_bytes > 0          ? server_.body_pool
                                                               : server_.handler_pool;
    asio::post(pool, [self = shared_from_this()] {
      HttpResponse res;
      try {
        self->route_->handler(self->request_, res);
      } catch (const std::exception& e) {
        core::log::error("http {} {}: {}", self->request_.method, self->request_.path, e.what());
        res = error_response(500, "internal error", true);
      }
      asio::post(self->stream_.get_executor(), [self, r = std::move(res)]() mutable { self->reply(std::move(r)); });
    });
  }

  void reply(HttpResponse r) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->result(static_cast<unsigned>(r.status));
    for (const auto& [k, v] : r.headers) res->set(k, v);
    if (!r.body.empty() || r.status != 204) res->set(http::field::content_type, r.content_type);
    res->body() = std::move(r.body);
    const bool keep = keep_alive_ && !r.close;
    keep_alive_ = false;  // until the next head says otherwise
    res->keep_alive(keep);
    res->prepare_payload();
    stream_.expires_after(server_.limits.write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
      if (ec) {
        if (ec == beast::error::timeout) ++self->server_.timed_out;
        return;
      }
      if (keep) return self->read_head();
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  ServerCore& server_;
  beast::tcp_stream stream_;
  ClientKey peer_;
  tcp::endpoint remote_, local_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest request_;
  const Route* route_ = nullptr;
  bool keep_alive_ = false;
};

HttpResponse ServerCore::authorize(const Route& route, const HttpRequest& req, const tcp::endpoint& remote,
                                   const tcp::endpoint& local) {
  HttpResponse ok;
  if (route.options.access != Access::read_api) return ok;
  if (loopback && !loopback_uids.empty()) {
    const auto uid = local_peer_uid(remote.address().to_string(), remote.port(), local.address().to_string(),
                                    local.port());
    if (uid && std::find(loopback_uids.begin(), loopback_uids.end(), *uid) != loopback_uids.end()) return ok;
    if (read_token.empty()) {
      ++unauthorized;
      return error_response(403,
                            "the read API is open to the users in agent.api_allowed_users only; this "
                            "connection's uid is " + (uid ? std::to_string(*uid) : std::string("unknown")),
                            false);
    }
  } else if (read_token.empty()) {
    if (loopback) return ok;
    ++unauthorized;
    return error_response(403,
                          "the read API is off: mltapd listens on a non-loopback address and "
                          "agent.api_token_file is not set",
                          false);
  }
  const std::string auth = req.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.size() <= kBearer.size() || !iequals(std::string_view(auth).substr(0, kBearer.size()), kBearer)) {
    ++unauthorized;
    HttpResponse r = error_response(401, "the read API needs 'Authorization: Bearer <token>'", false);
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"mltapd\"");
    return r;
  }
  if (!webhook::constant_time_equal(std::string_view(auth).substr(kBearer.size()), read_token)) {
    ++unauthorized;
    return error_response(403, "wrong bearer token", false);
  }
  return ok;
}

void ServerCore::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors (EMFILE/ENFILE) and the like: pause instead of spinning on the error.
      core::log::warn("http: accept failed: {}; retrying in 100 ms", ec.message());
      accept_retry.expires_after(100ms);
      accept_retry.async_wait([this](beast::error_code e) {
        if (!e) accept();
      });
      return;
    }
    on_accept(std::move(socket));
    accept();
  });
}

void ServerCore::on_accept(tcp::socket socket) {
  beast::error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  if (ec) return;
  const auto local = socket.local_endpoint(ec);
  if (ec) return;
  ClientKey peer{endpoint.address(), -1};
  if (peer.address.is_loopback()) {
    if (const auto uid = local_peer_uid(peer.address.to_string(), endpoint.port(), local.address().to_string(),
                                        local.port())) {
      peer.uid = *uid;
    }
  }
  const char* refusal = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto& n = per_address[peer];
    if (open >= limits.max_connections) {
      refusal = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                "Retry-After: 1\r\nContent-Length: 32\r\n\r\ntoo many connections to mltapd\r\n";
      ++refused_total;
    } else if (n >= limits.max_connections_per_address) {
      refusal = "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                "Retry-After: 1\r\nContent-Length: 38\r\n\r\ntoo many connections from this client\r\n";
      ++refused_per_address;
    } else {
      ++n;
      ++open;
    }
    if (refusal && n == 0) per_address.erase(peer);
  }
  if (refusal) {
    // A fresh socket's send buffer is empty: this one non-blocking write cannot wait.
    socket.non_blocking(true, ec);
    socket.write_some(asio::buffer(std::string_view(refusal)), ec);
    socket.shutdown(tcp::socket::shutdown_both, ec);
    return;
  }
  ++accepted;
  std::make_shared<Connection>(*this, std::move(socket), std::move(peer), endpoint, local)->start();
}

}  // namespace

struct HttpServer::Impl : ServerCore {
  using ServerCore::ServerCore;
};

HttpServer::HttpServer(ListenAddress address, HttpLimits limits)
    : impl_(std::make_unique<Impl>(std::move(address), limits)) {
  impl_->loopback = is_loopback_host(impl_->address.host);
  get("/metrics", [this](const HttpRequest&, HttpResponse& res) {
    res.set_content(render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bound_port() const noexcept { return impl_->port; }

const HttpLimits& HttpServer::limits() const noexcept { return impl_->limits; }

void HttpServer::set_read_token(std::string token) { impl_->read_token = std::move(token); }

void HttpServer::set_loopback_uids(std::vector<unsigned> uids) { impl_->loopback_uids = std::move(uids); }

bool HttpServer::read_api_needs_token() const noexcept {
  return !impl_->read_token.empty() || !impl_->loopback;
}

void HttpServer::get(const std::string& pattern, HttpHandler handler, RouteOptions options) {
  impl_->routes.push_back(Route{http::verb::get, std::regex(pattern), std::move(handler), std::move(options)});
}

void HttpServer::post(const std::string& pattern, HttpHandler handler, RouteOptions options) {
  impl_->routes.push_back(Route{http::verb::post, std::regex(pattern), std::move(handler), std::move(options)});
}

HttpServerStats HttpServer::stats() const {
  const Impl& m = *impl_;
  HttpServerStats s;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    s.connections_open = m.open;
  }
  s.connections_accepted = m.accepted;
  s.refused_per_address = m.refused_per_address;
  s.refused_total = m.refused_total;
  s.timed_out = m.timed_out;
  s.bad_requests = m.bad_requests;
  s.too_large = m.too_large;
  s.unauthorized = m.unauthorized;
  return s;
}

void HttpServer::add_collectable(std::shared_ptr<prometheus::Collectable> c) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->collectables.push_back(std::move(c));
}

namespace {

prometheus::MetricFamily counter_family(const std::string& name, const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Counter;
  return f;
}

void add_counter(prometheus::MetricFamily& f, double v, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  f.metric.push_back(std::move(m));
}

std::vector<prometheus::MetricFamily> server_families(const HttpServerStats& s) {
  std::vector<prometheus::MetricFamily> out;
  prometheus::MetricFamily open;
  open.name = "mltap_http_connections";
  open.help = "Client connections open to mltapd's HTTP server";
  open.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric g;
  g.gauge.value = static_cast<double>(s.connections_open);
  open.metric.push_back(g);
  out.push_back(std::move(open));
  auto accepted = counter_family("mltap_http_connections_accepted_total", "Client connections accepted");
  add_counter(accepted, static_cast<double>(s.connections_accepted));
  out.push_back(std::move(accepted));
  auto refused = counter_family("mltap_http_connections_refused_total",
                                "Client connections refused at accept, by cap reached");
  add_counter(refused, static_cast<double>(s.refused_per_address), {{"reason", "per_address"}});
  add_counter(refused, static_cast<double>(s.refused_total), {{"reason", "total"}});
  out.push_back(std::move(refused));
  auto rejected = counter_family("mltap_http_requests_rejected_total",
                                 "Requests cut off or refused by the server, by reason");
  add_counter(rejected, static_cast<double>(s.timed_out), {{"reason", "timeout"}});
  add_counter(rejected, static_cast<double>(s.bad_requests), {{"reason", "malformed"}});
  add_counter(rejected, static_cast<double>(s.too_large), {{"reason", "too_large"}});
  add_counter(rejected, static_cast<double>(s.unauthorized), {{"reason", "unauthorized"}});
  out.push_back(std::move(rejected));
  return out;
}

}  // namespace

std::string HttpServer::render_metrics() const {
  std::vector<prometheus::MetricFamily> families;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    for (const auto& c : impl_->collectables) {
      auto f = c->Collect();
      families.insert(families.end(), std::make_move_iterator(f.begin()),
                      std::make_move_iterator(f.end()));
    }
  }
  auto own = server_families(stats());
  families.insert(families.end(), std::make_move_iterator(own.begin()), std::make_move_iterator(own.end()));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

namespace {

// Thousands of connections need thousands of descriptors; the soft limit is often 1024.
void raise_descriptor_limit(std::size_t wanted) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < wanted) {
    const rlim_t before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? static_cast<rlim_t>(wanted) : std::min<rlim_t>(rl.rlim_max, wanted);
    if (::setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < wanted) {
      core::log::warn("http: open-file limit {} (hard limit) is below the {} descriptors the connection cap needs",
                   rl.rlim_cur, wanted);
    }
    (void)before;
  }
}

}  // namespace

bool HttpServer::start(std::string& error) {
  Impl& m = *impl_;
  if (m.started) {
    error = "http server already started";
    return false;
  }
  raise_descriptor_limit(m.limits.max_connections + 1024);
  beast::error_code ec;
  std::string host = m.address.host == "localhost" ? "127.0.0.1" : m.address.host;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    error = "cannot listen on " + m.address.host + ": not an IP address";
    return false;
  }
  const tcp::endpoint endpoint(addr, static_cast<unsigned short>(m.address.port));
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(m.limits.backlog, ec);
  if (ec) {
    error = "cannot listen on " + m.address.host + ":" + std::to_string(m.address.port) + " (" + ec.message() +
            "; in use, or not an address of this host)";
    beast::error_code ignored;
    m.acceptor.close(ignored);
    return false;
  }
  m.port = m.acceptor.local_endpoint().port();
  m.started = true;
  m.accept();
  m.thread = std::thread([&m] {
    for (;;) {
      try {
        m.ioc.run();
        return;
      } catch (const std::exception& e) {
        core::log::error("http: event loop: {}", e.what());  // keep serving
      }
    }
  });
  core::log::info("serving http://{}:{}/metrics (read API: {})", m.address.host, m.port,
               read_api_needs_token() ? (m.read_token.empty() ? "off, no agent.api_token_file" : "bearer token")
                                      : "open on loopback");
  return true;
}

void HttpServer::stop() {
  Impl& m = *impl_;
  if (!m.started) return;
  m.started = false;
  asio::post(m.ioc, [&m] {
    beast::error_code ignored;
    m.acceptor.close(ignored);
    m.accept_retry.cancel();
  });
  m.ioc.stop();
  if (m.thread.joinable()) m.thread.join();
  beast::error_code ignored;
  m.acceptor.close(ignored);  // the loop is stopped: no other thread uses it now
  m.handler_pool.join();
  m.body_pool.join();
  m.read_api_pool.join();
}

}  // namespace mltap::api
