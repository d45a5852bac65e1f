-- wrk script: POST the JSON echo body to /process.
wrk.method = "POST"
wrk.body = '{"input_data": {"prompt": "Summarise the plot of Hamlet in one sentence.", "max_tokens": 64, "temperature": 0.7, "stop": ["\\n"]}}'
wrk.headers["Content-Type"] = "application/json"
