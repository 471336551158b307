// rill/rill.hpp: the umbrella header.
#pragma once

#include "rill/fiber.hpp"
#include "rill/runtime.hpp"
#include "rill/sync.hpp"
