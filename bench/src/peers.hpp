// The peer queues the benchmark measures ringbus against, included in one place.
//
// moodycamel's ReaderWriterQueue orders its slots with standalone fences, which
// ThreadSanitizer does not model; its header annotates them for ThreadSanitizer only
// where the compiler has __has_feature (clang, GCC 14 and later). Under GCC 12 with
// -fsanitize=thread the same annotations are supplied here, so that a sanitized build
// of the benchmark sees the queue's real synchronisation instead of reporting races
// that are not there. Other builds are unchanged.
#pragma once

#if defined(__SANITIZE_THREAD__) && !defined(__has_feature)
extern "C" void AnnotateHappensBefore(const char* file, int line, void* address);
extern "C" void AnnotateHappensAfter(const char* file, int line, void* address);
namespace ringbus::bench {
inline int rwq_fence_sync;
}
#define AE_TSAN_ANNOTATE_RELEASE() AnnotateHappensBefore(__FILE__, __LINE__, &::ringbus::bench::rwq_fence_sync)
#define AE_TSAN_ANNOTATE_ACQUIRE() AnnotateHappensAfter(__FILE__, __LINE__, &::ringbus::bench::rwq_fence_sync)
#endif

#include <atomic_queue/atomic_queue.h>
#include <boost/lockfree/spsc_queue.hpp>
#include <readerwriterqueue/readerwriterqueue.h>
