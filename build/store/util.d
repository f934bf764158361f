build/store/util.o: store/util.c store/util.h
store/util.h:
