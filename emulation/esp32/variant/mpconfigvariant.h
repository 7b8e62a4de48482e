// The ESP32 profile of the emulator (see mpconfigvariant.mk): the feature level of the unix
// standard variant, with the ESP32's single-precision floats.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)
#include "variants/mpconfigvariant_common.h"
