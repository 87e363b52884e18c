#include "recorder.h"
TestSuite(x);
