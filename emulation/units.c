/* Decibel conversions. */
#include <math.h>

#include "emulation/emulation.h"

double wd_db_to_linear(double db) { return pow(10.0, db / 10.0); }
double wd_linear_to_db(double x) { return 10.0 * log10(x); }
double wd_dbm_to_watt(double dbm) { return pow(10.0, (dbm - 30.0) / 10.0); }
