// The fixture the hostile-session suites share (hostile_client_test.cpp: the runtime cut,
// hostile_driver_test.cpp and hostile_driver_modules_test.cpp: the driver cut). Each test gets a
// flyt-node of its own (GPU stand-in), a well-behaved victim session and the hostile session on it,
// over the transport the parameter names ("shm" or "tcp"); afterwards the node must not have seen a
// worker killed by a signal.
//
// Victim: constructed from (endpoint, config); has `session` (open()) and check(after), which
// asserts that its state is intact and usable. Session: constructed from (endpoint, config, name);
// has open() and expectWorks(after).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "process_helpers.hpp"
#include "raw_session.hpp"

namespace flyt::test {

template <class Victim, class Session>
class HostileFixture : public ::testing::TestWithParam<std::string> {
 protected:
  // `nodePrefix`: the node's endpoint names start with it.
  explicit HostileFixture(std::string nodePrefix) : m_nodePrefix(std::move(nodePrefix)) {}
  // More flyt-node options (a quota).
  virtual std::vector<std::string> nodeOptions() const { return {}; }

  void SetUp() override {
    holdHostRouDiLock();
    m_node = std::make_unique<StandinNode>(FLYT_NODE_PATH, m_nodePrefix, std::vector<std::string>{}, nodeOptions());
    ASSERT_TRUE(m_node->ready()) << m_node->log();
    m_victim = std::make_unique<Victim>(endpoint(), smallRegionConfig());
    m_hostile = std::make_unique<Session>(endpoint(), smallRegionConfig(), "hostile");
    ASSERT_TRUE(m_victim->session.open() && m_hostile->open()) << m_node->log();
  }
  void TearDown() override {
    if (m_node) {
      EXPECT_EQ(m_node->log().find("killed by signal"), std::string::npos) << m_node->log();
    }
  }
  [[nodiscard]] const std::string& endpoint() const { return m_node->endpoint(GetParam()); }
  // After an attack: the hostile session and the victim both still work.
  void bothStillWork(const char* after) {
    m_hostile->expectWorks(after);
    m_victim->check(after);
  }

  std::string m_nodePrefix;
  std::unique_ptr<StandinNode> m_node;
  std::unique_ptr<Victim> m_victim;
  std::unique_ptr<Session> m_hostile;
};

}  // namespace flyt::test
