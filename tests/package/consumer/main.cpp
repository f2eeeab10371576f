// Publishes and consumes through the installed headers and library.
#include <ringbus/ringbus.hpp>

#include <cstdio>
#include <string>
#include <unistd.h>

int main() {
  const auto loc = ringbus::Location::shm("rb-package-" + std::to_string(::getpid()));
  const auto seg = ringbus::Segment::create(loc, {.capacity = 1 << 16, .max_event = 256});
  auto group = ringbus::ConsumerGroup::join(seg, "package");
  auto producer = ringbus::Producer::attach(seg);
  const std::string text = "hello from an installed ringbus";
  if (producer.try_publish(ringbus::key_of("greeting"), 1, std::as_bytes(std::span(text))) != ringbus::Status::ok) {
    return 1;
  }
  std::string got;
  group.worker(0).poll([&](const ringbus::Event& e) {
    got.assign(reinterpret_cast<const char*>(e.payload().data()), e.payload().size());
  });
  ringbus::Segment::remove(loc);
  std::printf("%s\n", got.c_str());
  return got == text ? 0 : 2;
}
