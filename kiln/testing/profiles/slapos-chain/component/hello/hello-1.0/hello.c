#include <stdio.h>
#include "libb.h"

int main(void) {
  puts(libb_greeting());
  return 0;
}
