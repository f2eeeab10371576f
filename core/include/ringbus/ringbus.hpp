// Everything an application needs: segments, producers, consumer groups, tail readers.
#pragma once

#include "ringbus/clock.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus/error.hpp"
#include "ringbus/event.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/status.hpp"
#include "ringbus/tail_reader.hpp"
#include "ringbus/wait_strategy.hpp"
