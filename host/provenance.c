/* What every result file says about where it came from (docs/results.md):
 *   "schema_version", "wdmoe_version" (CMake's PROJECT_VERSION), "git_commit"
 *   (of the source tree at build time, "-dirty" with uncommitted changes),
 *   "date" (UTC, ISO 8601), "command_line" (the arguments as the command
 *   parsed them) and "seeds" {name: value}. */
#include <json-c/json.h>
#include <stdio.h>
#include <time.h>

#include "host/cli.h"
#include "host/host.h"
#include "wd_version.h"

const char *wd_version(void) { return WDMOE_VERSION; }
const char *wd_git_commit(void) { return WDMOE_GIT_COMMIT; }

void wd_cli_provenance(struct json_object *doc, const char *cmd, int argc, char **argv,
                       const char *const *seed_names, const long long *seeds, int n_seeds) {
    json_object_object_add(doc, "schema_version", json_object_new_int(WD_RESULT_SCHEMA));
    json_object_object_add(doc, "wdmoe_version", json_object_new_string(WDMOE_VERSION));
    json_object_object_add(doc, "git_commit", json_object_new_string(WDMOE_GIT_COMMIT));
    char date[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm)) strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_object_add(doc, "date", json_object_new_string(date));
    json_object *cl = json_object_new_array();
    json_object_array_add(cl, json_object_new_string("wdmoe"));
    json_object_array_add(cl, json_object_new_string(cmd));
    for (int i = 1; i < argc; i++) json_object_array_add(cl, json_object_new_string(argv[i]));
    json_object_object_add(doc, "command_line", cl);
    json_object *s = json_object_new_object();
    for (int i = 0; i < n_seeds; i++)
        json_object_object_add(s, seed_names[i], json_object_new_int64(seeds[i]));
    json_object_object_add(doc, "seeds", s);
}
