// rill/rill.hpp: the umbrella header.
#pragma once

#include "rill/chan.hpp"
#include "rill/fiber.hpp"
#include "rill/pipeline.hpp"
#include "rill/runtime.hpp"
#include "rill/select.hpp"
#include "rill/sync.hpp"
#include "rill/time.hpp"
