// rill/rill.hpp: the umbrella header.
#pragma once

#include "rill/chan.hpp"
#include "rill/context.hpp"
#include "rill/fiber.hpp"
#include "rill/io.hpp"
#include "rill/net.hpp"
#include "rill/pipeline.hpp"
#include "rill/pipeline/io.hpp"
#include "rill/ranges.hpp"
#include "rill/runtime.hpp"
#include "rill/select.hpp"
#include "rill/sync.hpp"
#include "rill/time.hpp"
