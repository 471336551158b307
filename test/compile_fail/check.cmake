# cmake -DCXX=<compiler> -DINCLUDE=<dir> -DSRC=<cases.cpp> -DCASE=<n> [-DEXPECT=<regex>]
#       [-DFLAGS=<flag;flag>] -P check.cmake
# Without EXPECT: CASE must compile. With EXPECT: it must fail with exactly one error, and
# that error must match EXPECT.
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only ${FLAGS} -DCASE=${CASE} -I${INCLUDE} ${SRC}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT DEFINED EXPECT)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "case ${CASE} should compile, but:\n${out}")
  endif()
  return()
endif()
if(rc STREQUAL "0")
  message(FATAL_ERROR "case ${CASE} compiled; it must not")
endif()
string(REGEX MATCHALL "[^\n]*error:[^\n]*" errors "${out}")
list(LENGTH errors n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "case ${CASE}: ${n} errors, expected exactly one:\n${out}")
endif()
if(NOT errors MATCHES "${EXPECT}")
  message(FATAL_ERROR "case ${CASE}: the error does not match /${EXPECT}/:\n${out}")
endif()
message(STATUS "case ${CASE}: one error: ${errors}")
