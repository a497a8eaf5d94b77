const char *libb_greeting(void);
