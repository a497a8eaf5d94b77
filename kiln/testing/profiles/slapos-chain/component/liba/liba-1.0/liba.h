const char *liba_word(void);
