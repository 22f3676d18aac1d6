# Dot-sourced by TestHelpers.ps1. Proofs that measure: a writer in the guest that numbers and checksums its writes
# on both disks while a fault is in effect, the read-back of every write it reported done, and the rows of the fault
# table (docs/fault-table.md, made by ./build.ps1 -Task FaultTable from what these rows measured).

# The guest writer (busybox sh, run with setsid so that it outlives the guest-exec that starts it and a killed
# qemu-ga). Each round it appends one record '<seq> <uptime> <random> <sha256 of the first three fields>' to
# /mnt/a/labw-<name>.log and /mnt/b/labw-<name>.log with an fsync each, then says 'LABW <name> <seq> ok' on the
# serial console: a file QEMU writes on the host, which the test reads whatever libvirtd or the guest agent do. A
# failed write says 'LABW <name> <seq> error <disk>' instead. Cheap on a TCG guest: about 5 short processes a round
# and a 0.25 s pause: 3.7 records a second, for 0.08 s of QEMU CPU a second (0.1 s: 8 a second for 0.18 s). It
# stops by itself after 15 minutes, should a failed test leave it running.
$script:GuestWriterScript = @'
run=$1
echo $$ > /run/labw-$run.pid
say() { echo "LABW $run $*" > /dev/console; }
say start
read up rest < /proc/uptime
end=$(( ${up%.*} + 900 ))
n=0
while [ ! -f /run/labw-$run.stop ] && [ ${up%.*} -lt $end ]; do
  n=$((n+1))
  read up rest < /proc/uptime
  rec="$n $up $RANDOM$RANDOM$RANDOM"
  sum=$(printf '%s' "$rec" | sha256sum)
  ok=ok
  for d in a b; do
    printf '%s %s\n' "$rec" "${sum%% *}" | dd of=/mnt/$d/labw-$run.log oflag=append conv=notrunc,fsync 2>/dev/null || { ok=; say "$n error /mnt/$d"; }
  done
  [ -n "$ok" ] && say "$n ok"
  sleep 0.25
done
say "stopped $n"
rm -f /run/labw-$run.pid
'@

# Starts a writer in the running guest; returns its record, which the window and read-back functions fill in.
function Start-GuestWriter([string] $DomainName, [string] $Label) {
    $short = ($Label -replace '[^A-Za-z0-9]+', '-').Trim('-')
    $name = '{0}-{1}' -f $short.Substring(0, [Math]::Min(24, $short.Length)).TrimEnd('-'), [guid]::NewGuid().ToString('N').Substring(0, 6)
    $writer = [pscustomobject]@{
        DomainName = $DomainName; Name = $name; Console = Get-LabConsoleLogPath $DomainName
        GuestFiles = @("/mnt/a/labw-$name.log", "/mnt/b/labw-$name.log"); ImageFile = "/labw-$name.log"
        WindowStart = $null; WindowEnd = $null; WindowWatch = $null; WindowSeconds = $null; Summary = $null; Log = $null
    }
    $r = Invoke-LabGuestCommand -DomainName $DomainName -Command "cat > /run/labw.sh <<'LABW_EOF'`n$GuestWriterScript`nLABW_EOF`nsetsid sh /run/labw.sh $name </dev/null >/dev/null 2>&1 &"
    if ($r.ExitCode -ne 0) { throw "the guest writer could not start in ${DomainName}: $($r.StdErr)" }
    Wait-Until { @((Get-GuestWriterLog $writer).Acked).Count -ge 2 } "the guest writer $name in $DomainName to report its first writes" 60
    $writer
}

# What the writer said on the console: each line with the byte offset where it ends. QEMU starts the console file
# anew when the domain starts again (the host-crash test): then what was read before the restart is what it said.
function Get-GuestWriterLog($Writer) {
    $text = [IO.File]::ReadAllText($Writer.Console, [Text.Encoding]::Latin1)
    if ($Writer.Log -and -not $text.Contains("LABW $($Writer.Name) start")) { return $Writer.Log }
    $lines = foreach ($m in [regex]::Matches($text, "LABW $([regex]::Escape($Writer.Name)) (start|stopped \d+|(\d+) ok|(\d+) error (\S+))\r?\n")) {
        [pscustomobject]@{ What = $m.Groups[1].Value; Seq = if ($m.Groups[2].Success) { [int]$m.Groups[2].Value } else { $null }; End = $m.Index + $m.Length }
    }
    $lines = @($lines)
    $Writer.Log = [pscustomobject]@{
        Lines = $lines
        Acked = @($lines | Where-Object Seq)
        Errors = @($lines | Where-Object What -like '* error *' | ForEach-Object What)
        Stopped = [bool]($lines | Where-Object What -like 'stopped *')
    }
    $Writer.Log
}

# The fault window: from right before the fault is injected to the end of the rollback or repair it caused. Both
# ends are positions in the console file, so that each write the guest reported can be placed before, in or after it.
function Open-FaultWindow($Writer) {
    $Writer.WindowStart = (Get-Item -LiteralPath $Writer.Console).Length
    $Writer.WindowWatch = [Diagnostics.Stopwatch]::StartNew()
}

function Close-FaultWindow($Writer) {
    if ($null -eq $Writer.WindowStart) { throw "the fault window of $($Writer.Name) was never opened" }
    $Writer.WindowEnd = (Get-Item -LiteralPath $Writer.Console).Length
    $Writer.WindowSeconds = [math]::Round($Writer.WindowWatch.Elapsed.TotalSeconds, 1)
    $null = Get-GuestWriterLog $Writer
}

# Records written wholly inside the window: begun after the fault (the writer begins a record only after it reported
# the one before, and that report came after the window opened) and fsynced on both disks before the window closed.
function Get-WritesInWindow($Writer, $Log) {
    $count = 0
    for ($i = 1; $i -lt $Log.Lines.Count; $i++) {
        if ($Log.Lines[$i].Seq -and $Log.Lines[$i - 1].End -gt $Writer.WindowStart -and $Log.Lines[$i].End -le $Writer.WindowEnd) { $count++ }
    }
    $count
}

function Stop-GuestWriter($Writer) {
    $pidFile = "/run/labw-$($Writer.Name).pid"
    $r = Invoke-LabGuestCommand -DomainName $Writer.DomainName -Command "if [ -f $pidFile ] && [ -d /proc/`$(cat $pidFile) ]; then touch /run/labw-$($Writer.Name).stop; echo running; fi"
    if ($r.StdOut -match 'running') { Wait-Until { (Get-GuestWriterLog $Writer).Stopped } "the guest writer $($Writer.Name) to stop" 60 }
}

# Checks one copy of a writer's file against the writes it reported done. Returns what is wrong, each naming the
# record (missing, damaged, duplicated, out of order) and where it was read.
function Test-WriterRecords([string] $Text, [int[]] $Acked, [string] $Where, [switch] $MayBeTorn) {
    $problems = [System.Collections.Generic.List[string]]::new()
    $found = @{}
    $last = 0
    $lines = @($Text -split "`n" | Where-Object { $_ -ne '' })
    for ($i = 0; $i -lt $lines.Count; $i++) {
        $line = $lines[$i]
        $ok = $line -match '^(\d+) (\d+\.\d+) (\d+) ([0-9a-f]{64})$'
        if ($ok) {
            $sum = [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData([Text.Encoding]::ASCII.GetBytes("$($Matches[1]) $($Matches[2]) $($Matches[3])"))).ToLowerInvariant()
            $ok = $sum -eq $Matches[4]
        }
        if (-not $ok) {
            # Only a crash may leave the last record half written, and only one the writer never reported done.
            $seq = if ($line -match '^(\d+) ') { [int]$Matches[1] } else { -1 }
            if (-not ($MayBeTorn -and $i -eq $lines.Count - 1 -and $seq -notin $Acked)) { $problems.Add("line $($i + 1) of $Where is damaged (checksum does not match): '$($line.Substring(0, [Math]::Min(120, $line.Length)))'") }
            continue
        }
        $seq = [int]$Matches[1]
        if ($found.ContainsKey($seq)) { $problems.Add("record $seq appears twice in $Where") }
        elseif ($seq -le $last) { $problems.Add("record $seq comes after record $last in $Where") }
        $found[$seq] = $true
        $last = [Math]::Max($last, $seq)
    }
    $missing = @($Acked | Where-Object { -not $found.ContainsKey($_) })
    if ($missing.Count) { $problems.Add("$($missing.Count) record(s) the guest reported written and fsynced are not in ${Where}: $(($missing | Select-Object -First 20) -join ', ')$(if ($missing.Count -gt 20) { ', ...' })") }
    [pscustomobject]@{ Found = @($Acked | Where-Object { $found.ContainsKey($_) }).Count; Problems = $problems }
}

# Stops the writer, then reads every write it reported done back from the VM's own disks: through the guest (its
# files on /mnt/a and /mnt/b) and from the disk images on the host (frozen while read, when the VM runs). Fails naming
# each record that is missing or damaged, and a window in which the guest wrote nothing. Returns the figures.
function Assert-GuestWrites($Writer, [switch] $NoWindow) {
    Stop-GuestWriter $Writer
    $log = Get-GuestWriterLog $Writer
    $acked = @($log.Acked | ForEach-Object Seq)
    $torn = -not $log.Stopped   # the writer died with its VM (a crash): its last record may be half written
    $checks = [System.Collections.Generic.List[object]]::new()
    $sep = '@@LABW@@'
    $r = Invoke-LabGuestCommand -DomainName $Writer.DomainName -Command "cat $($Writer.GuestFiles[0]); echo $sep; cat $($Writer.GuestFiles[1])"
    $r.ExitCode | Should -Be 0 -Because "the guest reads its own files: $($r.StdErr)"
    $views = $r.StdOut -split [regex]::Escape($sep)
    $checks.Add((Test-WriterRecords $views[0] $acked "$($Writer.GuestFiles[0]) read by the guest" -MayBeTorn:$torn))
    $checks.Add((Test-WriterRecords $views[1] $acked "$($Writer.GuestFiles[1]) read by the guest" -MayBeTorn:$torn))
    $images = @(Get-DiskChain $Writer.DomainName | Sort-Object Target | ForEach-Object Source)
    $running = (Invoke-Virsh @('domstate', $Writer.DomainName)).StdOut.Trim() -eq 'running'
    if ($running) { Invoke-Virsh @('domfsfreeze', $Writer.DomainName) | Out-Null }
    try {
        foreach ($image in $images) { $checks.Add((Test-WriterRecords (Get-LabImageFile -Path $image -GuestPath $Writer.ImageFile) $acked "$($Writer.ImageFile) in the image $image" -MayBeTorn:$torn)) }
    }
    finally { if ($running) { Invoke-Virsh @('domfsthaw', $Writer.DomainName) | Out-Null } }
    $inWindow = if ($null -ne $Writer.WindowEnd) { Get-WritesInWindow $Writer $log } else { $null }
    $Writer.Summary = [pscustomobject]@{
        Acked = $acked.Count
        ReadBack = ($checks | Measure-Object -Property Found -Minimum).Minimum
        Places = $checks.Count
        InWindow = $inWindow
        WindowSeconds = $Writer.WindowSeconds
    }
    Write-Host ("[writer] {0} in {1}: {2} writes reported done, {3} read back from each of {4} places; {5} in the fault window of {6} s" -f $Writer.Name, $Writer.DomainName, $acked.Count, $Writer.Summary.ReadBack, $checks.Count, $inWindow, $Writer.WindowSeconds)
    $log.Errors | Should -BeNullOrEmpty -Because 'the guest''s writes must not fail'
    $images.Count | Should -Be 2
    $acked.Count | Should -BeGreaterThan 0 -Because 'the writer must have reported writes'
    @($checks | ForEach-Object { $_.Problems }) | Should -BeNullOrEmpty -Because 'every write the guest reported done must be read back, intact, from its own disks'
    if (-not $NoWindow) {
        $Writer.WindowEnd | Should -Not -BeNullOrEmpty -Because 'the test must close the fault window'
        $inWindow | Should -BeGreaterThan 0 -Because "the guest must have written while the fault was in effect (a window of $($Writer.WindowSeconds) s)"
    }
    $Writer.Summary
}

# ------------------------------------------------------------------ the fault table
# Each fault test adds its row once every assertion passed; a test that failed leaves its row marked failed, and
# ./build.ps1 -Task FaultTable refuses to make the table from a run with a failed row.
$script:FaultRows = [System.Collections.Generic.List[object]]::new()

# Opens the row of a fault test, then starts the guest writer in $DomainName ($row.Writer). The row is there first,
# so that a test that fails even before its writer runs leaves a failed row.
function New-FaultRow([string] $Fault, [string] $DomainName) {
    $row = [pscustomobject]@{
        Fault = $Fault; Passed = $false; WindowSeconds = $null; WritesInWindow = $null; WritesAcked = $null; WritesReadBack = $null
        ReadFrom = $null; ErrorId = $null; SecondsToError = $null; Limit = $null; Writer = $null
    }
    $script:FaultRows.Add($row)
    $row.Writer = Start-GuestWriter $DomainName $Fault
    $row
}

# Fills in the row from the writer's read-back (Assert-GuestWrites) and marks it passed: call it last in the test.
function Complete-FaultRow($Row, [string] $Fault) {
    if ($Fault) { $Row.Fault = $Fault }
    $s = $Row.Writer.Summary
    if ($null -eq $s) { throw "the guest's writes of '$($Row.Fault)' were never read back" }
    $Row.WindowSeconds = $s.WindowSeconds; $Row.WritesInWindow = $s.InWindow; $Row.WritesAcked = $s.Acked
    $Row.WritesReadBack = $s.ReadBack; $Row.ReadFrom = $s.Places
    $Row.Passed = $true
}

# The error the fault ended in (its id as the test got it), and where the test could time it, the seconds from the
# fault to the error and the limit that was set.
function Set-FaultRowError($Row, [string] $ErrorId, $Seconds = $null, [string] $Limit = '') {
    $Row.ErrorId = $ErrorId
    $Row.SecondsToError = if ($null -ne $Seconds) { [math]::Round($Seconds, 1) }
    $Row.Limit = $Limit
}

# AfterAll of each file with fault tests: out/fault-table/<file>.json, read by ./build.ps1 -Task FaultTable.
function Save-FaultRows([string] $File) {
    $folder = Join-Path $RepoRoot 'out/fault-table'
    New-Item -ItemType Directory -Force -Path $folder | Out-Null
    [pscustomobject]@{
        File = $File
        FinishedUtc = [datetime]::UtcNow.ToString('yyyy-MM-dd HH:mm') + ' UTC'
        Commit = (& git -C $RepoRoot rev-parse --short HEAD 2>$null)
        Dirty = [bool](& git -C $RepoRoot status --porcelain 2>$null)
        Rows = @($script:FaultRows | Select-Object -Property * -ExcludeProperty Writer)
    } | ConvertTo-Json -Depth 5 | Set-Content -Path (Join-Path $folder "$File.json")
}
