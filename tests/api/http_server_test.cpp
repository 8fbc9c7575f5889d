// mltapd's HTTP server (agent/api/http_server) against hostile clients, over real sockets:
// a thousand idle connections and slowloris clients held while /metrics answers, head deadlines,
// the per-address connection cap, size limits, clear 4xx answers, and the read API's token.
// Speed is measured in bench/http; here every bound is a generous functional one.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "agent/api/http_server.hpp"
#include "agent/api/routes.hpp"

namespace mltap::api {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A client socket connected from `source` (any address of 127.0.0.0/8 is this host's), or -1.
int connect_from(const std::string& source, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &src.sin_addr);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd_ = std::exchange(o.fd_, -1);
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

bool send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads until the peer closes or `timeout` passes; `closed` tells which.
std::string read_until_close(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  std::string out;
  const auto end = Clock::now() + timeout;
  if (closed) *closed = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (left <= 0) return out;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[8192];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      return out;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
}

// One request on a fresh connection from `source`; the status code (0: no answer within 5 s).
int status_of(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12) return 0;
  return std::stoi(answer.substr(9, 3));
}

std::string request(int port, const std::string& raw, const std::string& source = "127.0.0.1") {
  Fd fd(connect_from(source, port));
  if (fd.get() < 0 || !send_all(fd.get(), raw)) return {};
  return read_until_close(fd.get(), 5s);
}

std::string get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra_headers + "\r\n";
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpLimits limits = {}, const std::string& host = "127.0.0.1") {
    ::signal(SIGPIPE, SIG_IGN);
    server_ = std::make_unique<HttpServer>(ListenAddress{host, 0}, limits);
    server_->get("/healthz", [](const HttpRequest&, HttpResponse& res) { res.set_content("ok\n", "text/plain"); });
    server_->post("/echo", [](const HttpRequest& req, HttpResponse& res) { res.set_content(req.body, "text/plain"); },
                  RouteOptions{Access::open, 1024, {}, {}});
    server_->get("/api/v1/secret", [](const HttpRequest&, HttpResponse& res) { res.set_content("{}", "application/json"); },
                 RouteOptions{Access::read_api, 0, {}, {}});
  }
  void run() {
    std::string error;
    ASSERT_TRUE(server_->start(error)) << error;
    port_ = server_->bound_port();
  }
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpServerTest, AnswersMetricsWhileAThousandIdleAndFiftySlowlorisConnectionsAreHeld) {
  HttpLimits limits;
  limits.header_timeout = 60s;  // the held connections must outlive the test's requests
  start(limits);
  run();
  // 1,000 idle connections from 10 addresses (100 each, under the per-address cap of 128)...
  std::vector<Fd> idle;
  for (int i = 0; i < 1000; ++i) {
    idle.emplace_back(connect_from("127.0.1." + std::to_string(1 + i / 100), port_));
    ASSERT_GE(idle.back().get(), 0) << "connection " << i << ": " << std::strerror(errno);
  }
  // ...and 50 slowloris clients trickling a request head one byte at a time.
  std::vector<Fd> slow;
  for (int i = 0; i < 50; ++i) {
    slow.emplace_back(connect_from("127.0.2.1", port_));
    ASSERT_GE(slow.back().get(), 0);
  }
  std::atomic<bool> done{false};
  std::thread loris([&] {
    const std::string head = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (std::size_t k = 0; !done; ++k) {
      for (auto& s : slow) ::send(s.get(), &head[k % head.size()], 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(200ms);
    }
  });
  // The server really holds them all (none refused, none closed).
  const auto deadline = Clock::now() + 20s;
  while (server_->stats().connections_open < 1050 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(server_->stats().connections_open, 1050u);
  EXPECT_EQ(server_->stats().refused_per_address + server_->stats().refused_total, 0u);

  int answered = 0;
  double worst_ms = 0;
  for (int i = 0; i < 200; ++i) {
    const auto t0 = Clock::now();
    const std::string answer = request(port_, get("/metrics"));
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    worst_ms = std::max(worst_ms, ms);
    if (status_of(answer) == 200 && answer.find("mltap_http_connections ") != std::string::npos) ++answered;
  }
  done = true;
  loris.join();
  EXPECT_EQ(answered, 200);
  EXPECT_LT(worst_ms, 1000.0) << "a /metrics request waited behind the idle connections";
  // The held connections were never served or closed in the meantime.
  for (auto& s : idle) {
    pollfd p{s.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0);
  }
  EXPECT_GE(server_->stats().connections_open, 1050u);
}

TEST_F(HttpServerTest, ClosesIdleAndSlowConnectionsAtTheHeadDeadline) {
  HttpLimits limits;
  limits.header_timeout = 500ms;
  start(limits);
  run();
  Fd idle(connect_from("127.0.0.1", port_));
  Fd slow(connect_from("127.0.0.1", port_));
  ASSERT_GE(idle.get(), 0);
  ASSERT_GE(slow.get(), 0);
  const auto t0 = Clock::now();
  // The slow one keeps sending (a byte every 50 ms): a per-read timeout would never fire.
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  bool slow_closed = false;
  for (std::size_t k = 0; k < head.size() && !slow_closed; ++k) {
    if (::send(slow.get(), &head[k], 1, MSG_NOSIGNAL) != 1) slow_closed = true;
    std::this_thread::sleep_for(50ms);
    pollfd p{slow.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char c;
      if (::recv(slow.get(), &c, 1, 0) <= 0) slow_closed = true;
    }
  }
  const double slow_s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(slow_closed) << "a trickled head was still read after " << slow_s << " s";
  EXPECT_LT(slow_s, 2.0);
  bool idle_closed = false;
  read_until_close(idle.get(), 5s, &idle_closed);
  EXPECT_TRUE(idle_closed);
  EXPECT_GE(server_->stats().timed_out, 2u);
  // Keep-alive: after an answer, the connection gets the same deadline for its next head.
  Fd ka(connect_from("127.0.0.1", port_));
  ASSERT_TRUE(send_all(ka.get(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  bool ka_closed = false;
  const std::string answer = read_until_close(ka.get(), 5s, &ka_closed);
  EXPECT_EQ(status_of(answer), 200);
  EXPECT_TRUE(ka_closed);
  // Healthy requests are still served.
  EXPECT_EQ(status_of(request(port_, get("/healthz"))), 200);
}

TEST_F(HttpServerTest, RefusesAClientOverThePerAddressCapWhileOthersAreServed) {
  HttpLimits limits;
  limits.max_connections_per_address = 8;
  start(limits);
  run();
  std::vector<Fd> held;
  for (int i = 0; i < 8; ++i) held.emplace_back(connect_from("127.0.0.7", port_));
  const auto deadline = Clock::now() + 10s;
  while (server_->stats().connections_open < 8 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(server_->stats().connections_open, 8u);
  // The ninth from the same address is refused with a clear answer and closed...
  const std::string refused = request(port_, get("/healthz"), "127.0.0.7");
  EXPECT_EQ(status_of(refused), 429) << refused;
  EXPECT_NE(refused.find("too many connections from this client"), std::string::npos);
  EXPECT_EQ(server_->stats().refused_per_address, 1u);
  // ...while other addresses are served.
  EXPECT_EQ(status_of(request(port_, get("/healthz"), "127.0.0.1")), 200);
  EXPECT_EQ(status_of(request(port_, get("/metrics"), "127.0.0.8")), 200);
  // A slot freed is a slot taken again.
  held.pop_back();
  const auto freed = Clock::now() + 10s;
  while (server_->stats().connections_open > 7 && Clock::now() < freed) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(status_of(request(port_, get("/healthz"), "127.0.0.7")), 200);
}

TEST_F(HttpServerTest, RefusesOversizedAndMalformedRequestsWithClearAnswers) {
  start();
  run();
  // A head over 16 KiB: 431.
  const std::string big_head = request(port_, get("/healthz", "X-Big: " + std::string(20000, 'a') + "\r\n"));
  EXPECT_EQ(status_of(big_head), 431) << big_head.substr(0, 200);
  // A declared body over the route's 1 KiB: 413 before any of it is read.
  const std::string declared = request(
      port_, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(status_of(declared), 413) << declared;
  // A chunked body that grows past it: 413 while reading.
  std::string chunked = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  for (int i = 0; i < 4; ++i) chunked += "200\r\n" + std::string(512, 'b') + "\r\n";
  chunked += "0\r\n\r\n";
  const std::string streamed = request(port_, chunked);
  EXPECT_EQ(status_of(streamed), 413) << streamed;
  // A body on a route that takes none: 413.
  EXPECT_EQ(status_of(request(port_, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")), 413);
  // Within the limit: served.
  const std::string ok = request(port_, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  EXPECT_EQ(status_of(ok), 200);
  EXPECT_NE(ok.find("\r\n\r\nhello"), std::string::npos);
  // Expect: 100-continue (curl's default for larger bodies): the interim answer, then the body.
  {
    Fd fd(connect_from("127.0.0.1", port_));
    ASSERT_TRUE(send_all(fd.get(), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   "Expect: 100-continue\r\nConnection: close\r\n\r\n"));
    std::string interim;
    for (const auto end = Clock::now() + 5s; interim.find("\r\n\r\n") == std::string::npos && Clock::now() < end;) {
      pollfd p{fd.get(), POLLIN, 0};
      char buf[256];
      if (::poll(&p, 1, 100) > 0) {
        const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        interim.append(buf, static_cast<std::size_t>(n));
      }
    }
    EXPECT_EQ(interim.rfind("HTTP/1.1 100 Continue\r\n", 0), 0u) << interim;
    ASSERT_TRUE(send_all(fd.get(), "abc"));
    const std::string final_answer = read_until_close(fd.get(), 5s);
    EXPECT_NE(final_answer.find("200 OK"), std::string::npos) << final_answer;
    EXPECT_NE(final_answer.find("\r\n\r\nabc"), std::string::npos);
  }
  // Garbage, unknown path, wrong method.
  const std::string garbage = request(port_, "\x01\x02 nonsense\r\n\r\n");
  EXPECT_EQ(status_of(garbage), 400) << garbage;
  EXPECT_NE(garbage.find("malformed request"), std::string::npos);
  EXPECT_EQ(status_of(request(port_, get("/nope"))), 404);
  EXPECT_EQ(status_of(request(port_, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")), 405);
  const auto s = server_->stats();
  EXPECT_EQ(s.too_large, 4u);
  EXPECT_EQ(s.bad_requests, 1u);
  // The server's own counters are on /metrics.
  const std::string metrics = request(port_, get("/metrics"));
  EXPECT_NE(metrics.find("mltap_http_requests_rejected_total{reason=\"too_large\"} 4"), std::string::npos);
}

TEST_F(HttpServerTest, ReadApiIsOpenOnLoopbackWithoutAToken) {
  start();
  run();
  EXPECT_FALSE(server_->read_api_needs_token());
  EXPECT_EQ(status_of(request(port_, get("/api/v1/secret"))), 200);
}

TEST_F(HttpServerTest, ReadApiIsRefusedOnANonLoopbackAddressWithoutAToken) {
  start({}, "0.0.0.0");
  run();
  EXPECT_TRUE(server_->read_api_needs_token());
  const std::string refused = request(port_, get("/api/v1/secret"));
  EXPECT_EQ(status_of(refused), 403);
  EXPECT_NE(refused.find("agent.api_token_file"), std::string::npos);
  // Prometheus and health checks stay open.
  EXPECT_EQ(status_of(request(port_, get("/metrics"))), 200);
  EXPECT_EQ(status_of(request(port_, get("/healthz"))), 200);
}

TEST_F(HttpServerTest, ReadApiNeedsTheBearerTokenWhenOneIsSet) {
  start({}, "0.0.0.0");
  server_->set_read_token("read-token-0123456789abcdef");
  run();
  const std::string none = request(port_, get("/api/v1/secret"));
  EXPECT_EQ(status_of(none), 401);
  EXPECT_NE(none.find("WWW-Authenticate: Bearer"), std::string::npos);
  EXPECT_EQ(status_of(request(port_, get("/api/v1/secret", "Authorization: Bearer wrong-token-0123456789abcd\r\n"))), 403);
  EXPECT_EQ(status_of(request(port_, get("/api/v1/secret", "Authorization: Bearer read-token-0123456789abcdef\r\n"))), 200);
  EXPECT_EQ(server_->stats().unauthorized, 2u);
}

// What a request from another local user (uid 65534, in a forked child) gets: the status code.
int status_as_nobody(int port, const std::string& raw) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(1);
    const std::string answer = request(port, raw);
    ::_exit(status_of(answer) / 100 * 10 + status_of(answer) % 10);  // 200 -> 20, 403 -> 43
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// On loopback every local user connects from 127.0.0.1: the per-client cap counts each local
// user on its own, so another account holding all of its slots shuts out neither root nor itself
// for good.
TEST_F(HttpServerTest, OnLoopbackTheConnectionCapIsPerLocalUser) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  HttpLimits limits;
  limits.max_connections_per_address = 8;
  start(limits);
  run();
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // uid 65534 takes its 8 slots and holds them until told to let go.
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(1);
    std::vector<Fd> held;
    for (int i = 0; i < 8; ++i) held.emplace_back(connect_from("127.0.0.1", port_));
    const int ninth = status_of(request(port_, get("/healthz")));
    const char c = static_cast<char>(ninth == 429 ? 'y' : 'n');
    if (::write(ready[1], &c, 1) != 1) ::_exit(2);
    char x;
    (void)::read(release[0], &x, 1);
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  EXPECT_EQ(c, 'y') << "the other user's ninth connection was not refused";
  EXPECT_GE(server_->stats().connections_open, 8u);
  // Root, from the same address, is served while uid 65534 holds its cap.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(status_of(request(port_, get("/healthz"))), 200);
  EXPECT_EQ(server_->stats().refused_per_address, 1u);
  ASSERT_EQ(::write(release[1], "x", 1), 1);
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  for (int fd : {ready[0], ready[1], release[0], release[1]}) ::close(fd);
}

TEST(LocalPeerUid, NamesTheUidOwningTheClientSocket) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  Fd c(connect_from("127.0.0.3", ntohs(a.sin_port)));
  sockaddr_in mine{};
  len = sizeof mine;
  ::getsockname(c.get(), reinterpret_cast<sockaddr*>(&mine), &len);
  EXPECT_EQ(local_peer_uid("127.0.0.3", ntohs(mine.sin_port), "127.0.0.1", ntohs(a.sin_port)), ::getuid());
  EXPECT_EQ(local_peer_uid("127.0.0.3", static_cast<unsigned short>(ntohs(mine.sin_port) ^ 1), "127.0.0.1",
                           ntohs(a.sin_port)),
            std::nullopt);
  ::close(lfd);
}

TEST_F(HttpServerTest, OnLoopbackOnlyAllowedUidsReadWithoutTheToken) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  start();
  server_->set_loopback_uids({0});
  run();
  EXPECT_EQ(status_of(request(port_, get("/api/v1/secret"))), 200);  // root is allowed
  EXPECT_EQ(status_as_nobody(port_, get("/api/v1/secret")), 43);   // uid 65534: 403
  EXPECT_EQ(status_as_nobody(port_, get("/healthz")), 20);         // open routes stay open
  EXPECT_EQ(server_->stats().unauthorized, 1u);
}

TEST_F(HttpServerTest, OnLoopbackOtherUidsMayUseTheToken) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  start();
  server_->set_loopback_uids({0});
  server_->set_read_token("read-token-0123456789abcdef");
  run();
  EXPECT_EQ(status_of(request(port_, get("/api/v1/secret"))), 200);  // root without the token
  EXPECT_EQ(status_as_nobody(port_, get("/api/v1/secret")), 41);   // 401
  EXPECT_EQ(status_as_nobody(port_, get("/api/v1/secret", "Authorization: Bearer read-token-0123456789abcdef\r\n")), 20);
}

// Every route mltapd mounts (routes.hpp) on a non-loopback address without a token: each read
// route refuses, nothing but the webhook takes a POST, and the webhook wants its own token.
TEST_F(HttpServerTest, EveryAgentRouteIsGuarded) {
  start({}, "0.0.0.0");
  AgentRoutes routes;
  routes.streams = [](bool) { return std::make_shared<const core::IngestSnapshot>(); };
  register_routes(*server_, std::move(routes));
  run();
  for (const char* path : {"/api/v1/streams", "/api/v1/streams?fresh", "/api/v1/findings", "/api/v1/findings/7",
                           "/api/v1/detectors", "/api/v1/events?stream=x"}) {
    EXPECT_EQ(status_of(request(port_, get(path))), 403) << path;
    const std::string post = "POST " + std::string(path) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    const int st = status_of(request(port_, post));
    EXPECT_TRUE(st == 405 || st == 404) << path << " took a POST: " << st;
  }
  EXPECT_EQ(status_of(request(port_, get("/healthz"))), 200);
}

}  // namespace
}  // namespace mltap::api
