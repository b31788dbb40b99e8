#include "deepprop.h"
