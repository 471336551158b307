# Installs the build tree into a scratch prefix, then configures, builds and runs the
# consumer project against it. Invoked by ctest (test "install.consumer"). With ASAN=ON it
# also builds and runs consumer_asan, which must exit 0 without a word from ASan.
set(prefix ${WORK}/prefix)
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${prefix} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/build -G Ninja
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX}
                        -DCONSUMER_ASAN=${ASAN}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed")
endif()
execute_process(COMMAND ${WORK}/build/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the consumer failed")
endif()
if(ASAN)
  # Twice: with the asan preset's options (fake stacks: use-after-return), and without fake
  # stacks, where stale redzones on a fiber's real stack show up as a false report.
  foreach(uar 1 0)
    execute_process(COMMAND ${CMAKE_COMMAND} -E env
                            ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=${uar}
                            ${WORK}/build/consumer_asan
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    message("${out}${err}")
    if(rc OR err MATCHES "AddressSanitizer|ASan")
      message(FATAL_ERROR "consumer_asan failed (detect_stack_use_after_return=${uar}, exit ${rc})")
    endif()
  endforeach()
endif()
