#include "flyt/transport/grant.hpp"

#include <gtest/gtest.h>

namespace flyt::transport {
namespace {

GrantInfo sample(std::int64_t now) {
  GrantInfo grant;
  grant.sessionId = 0x1234;
  grant.tenant = "vm-a";
  grant.node = "node-1";
  grant.gpuUuid = "GPU-0000";
  grant.smPercent = 25;
  grant.memoryBytes = 1ULL << 30;
  grant.issuedAtMs = now;
  grant.expiresAtMs = now + 30000;
  grant.idleTimeoutS = 60;
  return grant;
}

TEST(Grant, SignedGrantVerifiesAndCarriesEveryField) {
  auto signer = GrantSigner::generate();
  ASSERT_TRUE(signer) << signer.error().describe();
  const auto now = unixMillis();
  auto bytes = signer->sign(sample(now));
  ASSERT_TRUE(bytes);
  auto grant = checkGrantFor(signer->publicKey(), *bytes, "node-1", 0x1234, now);
  ASSERT_TRUE(grant) << grant.error().describe();
  EXPECT_EQ(grant->tenant, "vm-a");
  EXPECT_EQ(grant->gpuUuid, "GPU-0000");
  EXPECT_EQ(grant->smPercent, 25u);
  EXPECT_EQ(grant->memoryBytes, 1ULL << 30);
  EXPECT_EQ(grant->expiresAtMs, now + 30000);
  EXPECT_EQ(grant->idleTimeoutS, 60u);
}

TEST(Grant, KeyPairSurvivesARoundTripThroughItsPrivateKey) {
  auto signer = GrantSigner::generate();
  ASSERT_TRUE(signer);
  auto again = GrantSigner::fromPrivateKey(signer->privateKey());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->publicKey(), signer->publicKey());
  auto bytes = again->sign(sample(unixMillis()));
  ASSERT_TRUE(bytes);
  EXPECT_TRUE(verifyGrant(signer->publicKey(), *bytes));
}

TEST(Grant, ForgedOrTamperedGrantIsRefused) {
  auto orchestrator = GrantSigner::generate();
  auto forger = GrantSigner::generate();
  ASSERT_TRUE(orchestrator && forger);
  const auto now = unixMillis();
  auto forged = forger->sign(sample(now));
  ASSERT_TRUE(forged);
  auto refused = verifyGrant(orchestrator->publicKey(), *forged);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("signature"), std::string::npos);

  auto genuine = orchestrator->sign(sample(now));
  ASSERT_TRUE(genuine);
  // Flip every byte in turn: none may still verify as the same grant with a changed field.
  for (std::size_t i = 0; i < genuine->size(); ++i) {
    auto tampered = *genuine;
    tampered[i] ^= std::byte{0x01};
    auto result = verifyGrant(orchestrator->publicKey(), tampered);
    if (result) {
      // Only bytes outside the signed content (capnp padding) may be flipped harmlessly.
      EXPECT_EQ(result->memoryBytes, 1ULL << 30);
      EXPECT_EQ(result->smPercent, 25u);
      EXPECT_EQ(result->node, "node-1");
    }
  }
}

TEST(Grant, ExpiredGrantOrOneForAnotherNodeOrSessionIsRefused) {
  auto signer = GrantSigner::generate();
  ASSERT_TRUE(signer);
  const auto now = unixMillis();
  auto bytes = signer->sign(sample(now));
  ASSERT_TRUE(bytes);
  auto expired = checkGrantFor(signer->publicKey(), *bytes, "node-1", 0x1234, now + 30001);
  ASSERT_FALSE(expired);
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos);
  auto otherNode = checkGrantFor(signer->publicKey(), *bytes, "node-2", 0x1234, now);
  ASSERT_FALSE(otherNode);
  EXPECT_NE(otherNode.error().message.find("node-1"), std::string::npos);
  EXPECT_FALSE(checkGrantFor(signer->publicKey(), *bytes, "node-1", 0x9999, now));
}

TEST(Grant, GarbageAndMissingTokensAreClearErrors) {
  auto signer = GrantSigner::generate();
  ASSERT_TRUE(signer);
  auto none = verifyGrant(signer->publicKey(), {});
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("no grant"), std::string::npos);
  std::vector<std::byte> garbage(64, std::byte{0xff});
  EXPECT_FALSE(verifyGrant(signer->publicKey(), garbage));
  std::vector<std::byte> odd(13, std::byte{0});
  EXPECT_FALSE(verifyGrant(signer->publicKey(), odd));
}

TEST(Grant, HexRoundTrips) {
  std::vector<std::byte> bytes = {std::byte{0}, std::byte{0xab}, std::byte{0x7f}};
  EXPECT_EQ(toHex(bytes), "00ab7f");
  auto back = fromHex("00AB7f");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, bytes);
  EXPECT_FALSE(fromHex("0g"));
  EXPECT_FALSE(fromHex("abc"));
}

}  // namespace
}  // namespace flyt::transport
