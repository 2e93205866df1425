/* wdmoe-straggler: the wdmoe rule (policy_wdmoe.c), but a token may drop its
 * least probable chosen expert only when that expert sets the layer's wait:
 * its predicted latency tau is the largest among the experts the batch's
 * tokens chose at the start (top-k). Dropping a faster expert shortens no
 * wait (its bandwidth share going to the others aside, which tau does not
 * show), so it costs quality for nothing; wdmoe drops it when the weight-to-
 * latency ratio says so. Thresholds, gamma and the batch rule as wdmoe. */
#include "emulation/internal.h"

int wd_policy_wdmoe_straggler(const wd_policy_params *p, wd_policy_io *io) {
    return wd_policy_wdmoe_rule(p, io, 1);
}
