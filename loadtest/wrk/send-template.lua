-- wrk script: POST a valid template send (HTTP/1.1 keep-alive) to the simulator.
-- Usage: wrk -t1 -c64 -d10s -s loadtest/wrk/send-template.lua http://127.0.0.1:8090/v25.0/1001/messages
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messaging_product":"whatsapp","recipient_type":"individual","to":"+919876543210","type":"template","biz_opaque_callback_data":"msg_01JBENCH","template":{"name":"appointment_reminder","language":{"code":"en"},"components":[{"type":"body","parameters":[{"type":"text","text":"Asha"},{"type":"text","text":"10:30"}]}]}}'

local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non-200 responses: %d\n", summary.errors.status))
end
