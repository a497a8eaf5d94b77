#include <stdio.h>
#include "liba.h"
#include "libb.h"

const char *libb_greeting(void) {
  static char text[64];
  snprintf(text, sizeof text, "hello from %s", liba_word());
  return text;
}
