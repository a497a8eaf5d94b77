# Posts fluentd-style buffer chunks to a Wendelin ingest URL the way fluent-plugin-wendelin does:
# Ruby's Net::HTTP, HTTP Basic auth, one keep-alive connection, and the chunk's bytes as made by
# msgpack-ruby, fluentd's own msgpack library, with time as fluentd's EventTime (ext type 0).
#
#   ruby post_chunks.rb SETTINGS_JSON
#
# SETTINGS_JSON: url (with ?reference=<tag>), user, password, chunks, records (per chunk),
# resend (post every chunk twice, as fluentd does when an answer is lost), form (send the
# older plugins' data_chunk= form body), sent (a file to write the bytes of each chunk to).
# Prints one JSON line per request: the chunk's number, the status and the duplicate header.
# A 503 is retried, as fluentd's retry loop would (after a short pause here, not fluentd's
# backoff, and 50 times at most); anything else that is not a 2xx ends the run with exit
# status 1.

require "json"
require "msgpack"
require "net/http"
require "uri"

# fluentd's EventTime on the wire: ext type 0, seconds then nanoseconds, both big-endian uint32.
EventTime = Struct.new(:sec, :nsec) do
  def to_msgpack_ext
    [sec, nsec].pack("NN")
  end
end

settings = JSON.parse(ARGV.fetch(0))
uri = URI(settings.fetch("url"))
factory = MessagePack::Factory.new
factory.register_type(0, EventTime, packer: :to_msgpack_ext)

# Records with what fluentd carries: UTF-8 and binary strings (str and bin in msgpack), floats,
# nested maps and arrays, booleans and nil.
def record(chunk, number)
  {
    "chunk" => chunk,
    "n" => number,
    "temperature" => 20.5 + number,
    "site" => "éolienne-#{chunk}",
    "raw" => [chunk, number].pack("NN").force_encoding(Encoding::BINARY),
    "tags" => ["wind", { "level" => number % 3 }],
    "ok" => number.even?,
    "missing" => nil,
  }
end

def chunk_bytes(factory, chunk, records)
  packer = factory.packer
  records.times do |number|
    packer.write([EventTime.new(1_700_000_000 + chunk, number * 1000 + 7), record(chunk, number)])
  end
  packer.to_s
end

def post(http, uri, settings, body)
  request = Net::HTTP::Post.new(uri)
  request.basic_auth(settings.fetch("user"), settings.fetch("password"))
  # No Content-Type, like the plugin: Net::HTTP then labels the body as a form.
  request.body = settings["form"] ? URI.encode_www_form("data_chunk" => body) : body
  response = nil
  50.times do
    response = http.request(request)
    break unless response.code == "503"
    sleep(0.2)
  end
  response
end

sent = settings["sent"] ? File.open(settings["sent"], "wb") : nil
status = 0
Net::HTTP.start(uri.host, uri.port) do |http|
  settings.fetch("chunks").times do |chunk|
    body = chunk_bytes(factory, chunk, settings.fetch("records"))
    sent&.write(body)
    (settings["resend"] ? 2 : 1).times do
      response = post(http, uri, settings, body)
      puts JSON.generate(
        "chunk" => chunk, "status" => response.code.to_i,
        "duplicate" => response["X-Wendelin-Duplicate"], "body" => response.body.to_s
      )
      status = 1 unless response.code.start_with?("2")
    end
    break if status != 0
  end
end
sent&.close
exit status
