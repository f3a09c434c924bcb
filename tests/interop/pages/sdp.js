// SDP edits shared by the test pages.

// Without its UDP candidates, the other side can only be reached over ICE-TCP.
function withoutUdp(sdp) {
  return sdp.split("\r\n").filter((line) => !/^a=candidate:\S+ \d+ udp /i.test(line)).join("\r\n");
}
