#include "liba.h"

const char *liba_word(void) { return "kiln"; }
