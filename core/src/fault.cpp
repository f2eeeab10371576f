// Storage of the fault hook; linked only into ringbus::core_faults.
#include "ringbus/detail/fault.hpp"

namespace ringbus::detail {
FaultHook fault_hook = nullptr;
}
