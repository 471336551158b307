# cmake -DCMD=<program> -DARGS=<arg> -DEXPECT=<regex;regex...> -P expect_failure.cmake
# Passes when CMD fails (non-zero exit or a signal) and its output matches every regex.
execute_process(COMMAND ${CMD} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE out)
message("${out}")
if(rc STREQUAL "0")
  message(FATAL_ERROR "expected ${CMD} ${ARGS} to fail, but it succeeded")
endif()
foreach(re IN LISTS EXPECT)
  if(NOT out MATCHES "${re}")
    message(FATAL_ERROR "output of ${CMD} ${ARGS} lacks /${re}/")
  endif()
endforeach()
message(STATUS "failed as expected (${rc}), with every expected line")
