// core::UniqueFd: the agent's one owning-descriptor type closes exactly once, on every path.
#include <fcntl.h>
#include <unistd.h>

#include <utility>

#include <gtest/gtest.h>

#include "core/unique_fd.hpp"

namespace mltap::core {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(UniqueFd, ClosesWhenItGoesAndMovesOwnership) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    EXPECT_TRUE(a.valid());
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    EXPECT_EQ(b.get(), raw);
    UniqueFd c;
    c = std::move(b);
    EXPECT_EQ(c.get(), raw);
    EXPECT_TRUE(is_open(raw));
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(UniqueFd, ResetAndAssignmentCloseTheOldDescriptor) {
  const int first = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int second = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  UniqueFd f(first);
  f.reset(second);
  EXPECT_FALSE(is_open(first));
  EXPECT_TRUE(is_open(second));
  UniqueFd g(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int third = g.get();
  g = std::move(f);  // closes third, takes second
  EXPECT_FALSE(is_open(third));
  EXPECT_EQ(g.get(), second);
  const int released = g.release();
  EXPECT_FALSE(g.valid());
  EXPECT_TRUE(is_open(released));  // released: ours to close now
  ::close(released);
}

}  // namespace
}  // namespace mltap::core
