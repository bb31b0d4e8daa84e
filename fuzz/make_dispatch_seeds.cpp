// Writes the seed corpus of the dispatch fuzzer into the directory given as argv[1]: for every
// method id of the generated API table a one-call Batch (arguments all zero, with room for the
// largest argument struct), a Batch of several calls, a Goodbye and a RegionUpdate. Serialised as
// FlatArrayMessageReader reads them (dispatch_fuzz.cpp).
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "flyt/api/methods.hpp"
#include "flyt/wire/session.capnp.h"

namespace {

void write(const std::string& path, capnp::MessageBuilder& message, std::size_t payloadBytes = 0) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.begin()), static_cast<std::streamsize>(bytes.size()));
  for (std::size_t i = 0; i < payloadBytes; ++i) out.put(static_cast<char>(i));
}

void initCall(flyt::wire::Call::Builder call, std::uint64_t sequence, std::uint32_t method) {
  call.setSequence(sequence);
  call.setMethod(method);
  // An argument struct of 8 data words and 4 pointers, all zero: every field reads as its default.
  call.getArgs().initAsAnyStruct(8, 4);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  for (std::uint32_t id = 1; id < flyt::api::kMethodIdLimit; ++id) {
    capnp::MallocMessageBuilder message;
    auto batch = message.initRoot<flyt::wire::Envelope>().initBatch();
    batch.setWantsReply(true);
    initCall(batch.initCalls(1)[0], 1, id);
    write(fmt::format("{}/call-{:03}", dir, id), message, id % 4 == 0 ? 64 : 0);
  }
  {
    capnp::MallocMessageBuilder message;
    auto batch = message.initRoot<flyt::wire::Envelope>().initBatch();
    batch.setWantsReply(true);
    auto calls = batch.initCalls(4);
    const std::uint32_t methods[] = {static_cast<std::uint32_t>(flyt::api::Method::cudaMalloc),
                                     static_cast<std::uint32_t>(flyt::api::Method::cudaMemset),
                                     static_cast<std::uint32_t>(flyt::api::Method::cudaMemcpy),
                                     static_cast<std::uint32_t>(flyt::api::Method::cudaFree)};
    for (unsigned i = 0; i < 4; ++i) initCall(calls[i], i + 1, methods[i]);
    auto bulk = calls[2].initBulk(1)[0];
    bulk.setSegment(flyt::wire::INLINE_SEGMENT);
    bulk.setLength(64);
    write(dir + "/batch-4", message, 64);
  }
  {
    capnp::MallocMessageBuilder message;
    message.initRoot<flyt::wire::Envelope>().initGoodbye().setReason("done");
    write(dir + "/goodbye", message);
  }
  {
    capnp::MallocMessageBuilder message;
    auto update = message.initRoot<flyt::wire::Envelope>().initRegionUpdate();
    auto added = update.initAdded(1)[0];
    added.setId(1);
    added.setName("/flyt-region-1-0000000000000000-1");
    added.setSize(1 << 20);
    update.initRemoved(1).set(0, 1);
    write(dir + "/region-update", message);
  }
  return 0;
}
