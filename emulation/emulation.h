/* emulation: radio and time for WDMoE (see DESIGN.md, "Emulation semantics").
 * Depends on libc, libm and json-c only. */
#ifndef WD_EMULATION_H
#define WD_EMULATION_H

#ifdef __cplusplus
extern "C" {
#endif

double wd_db_to_linear(double db);
double wd_linear_to_db(double x);
double wd_dbm_to_watt(double dbm);

#ifdef __cplusplus
}
#endif
#endif
