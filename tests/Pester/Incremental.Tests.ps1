#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Chain-free incrementals (issue 15), on the real lab: a second backup of a running VM to a destination that holds a
# Complete set of it sends and stores only what changed, and is still a whole set that stands alone. To the real sshd
# on 127.0.0.1:2222 with its folder on the lab's XFS with reflink (Get-LabSshXfsFolder), to a local folder on that
# XFS (Get-LabXfsFolder), and to the sshd's ext4 folder (a server without reflink: 'local copy').
# What changed is measured here, never taken from the module: the copies of two sets are compared 64 KiB block by
# 64 KiB block (the unit the issue counts in), and the frozen source of each disk is hashed with sha256sum while the
# VM runs on its overlay (a stage of the pipeline between Copy-VmDisk and Invoke-BlockCommit).
#   flock /var/lock/odakvm-lab.lock dotnet pwsh -NoProfile -File ./build.ps1 -Task Build,Lab,Pester -PesterPath tests/Pester/Incremental.Tests.ps1
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    . (Join-Path $PSScriptRoot 'FaultHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    $script:Vm = 'linux_vm'
    Initialize-Lab -VmName $Vm   # a VM made anew: its disks hold only what this file writes
    Reset-LabVmIfNeeded $Vm
    $null = Start-LabSshd          # throws, failing every test here, when sshd cannot start
    $script:XfsSsh = Get-LabSshXfsFolder   # throws, failing every test here, when the XFS cannot be mounted
    $script:XfsLocal = Get-LabXfsFolder -Name local
    # The XFS outlives a run (its image is sparse, on the host's disk): the sets of earlier runs of this file go.
    Get-ChildItem -LiteralPath $XfsSsh, $XfsLocal -Directory -Filter 'inc-*' | Remove-Item -Recurse -Force
    $script:Results = Join-Path $RepoRoot 'out/incremental-results.txt'
    New-Item -ItemType Directory -Force -Path (Split-Path $Results) | Out-Null
    Set-Content -Path $Results -Value "Incremental backups measured by tests/Pester/Incremental.Tests.ps1, $([datetime]::UtcNow.ToString('u'))"
    $script:Block = 64KB

    # Data that no backup changes: 32 MiB of random data on each disk, written once. Every later change goes to
    # /mnt/b/change, written anew (random, so none of it can be in an earlier copy). The guest's own writer also
    # rewrites 8 files of 512 KiB on /mnt/b every 0.5 s (tests/Lab/guest/init): that churn is measured with the rest.
    function Initialize-GuestData {
        $r = Invoke-LabGuestCommand -DomainName $Vm -TimeoutSeconds 120 -Command 'for d in a b; do [ -f /mnt/$d/base ] || dd if=/dev/urandom of=/mnt/$d/base bs=1M count=32 conv=fsync 2>/dev/null || exit 1; done; sync'
        if ($r.ExitCode -ne 0) { throw "guest write failed: $($r.StdErr)" }
    }
    Initialize-GuestData

    function Get-Field($Object, [string] $Name) {
        if ($null -eq $Object) { return $null }
        $p = $Object.PSObject.Properties[$Name]
        if ($p) { $p.Value } else { $null }
    }
    function Get-Manifest([string] $Set) { Get-Content -Raw (Join-Path $Set 'backup.json') | ConvertFrom-Json }
    function Get-ManifestDisk($Manifest, [string] $Target) { @($Manifest.Disks | Where-Object Target -eq $Target)[0] }
    function Get-Sha256([string] $Path) { ((& sha256sum -- $Path) -split '\s+')[0] }

    # Every file of a set folder: SHA-256, size and modification time; equal only when nothing in it was touched.
    function Get-SetFileState([string] $Set) {
        @(Get-ChildItem -LiteralPath $Set -File -Force | Sort-Object Name | ForEach-Object {
                '{0} {1} {2} {3}' -f $_.Name, $_.Length, $_.LastWriteTimeUtc.Ticks, (Get-Sha256 $_.FullName)
            })
    }

    # The SHA-256 of each 64 KiB block of a file (holes read as zeros).
    function Get-BlockHashes([string] $Path) {
        $buffer = [byte[]]::new($Block)
        $stream = [IO.File]::OpenRead($Path)
        $sha = [Security.Cryptography.SHA256]::Create()
        try {
            $list = [Collections.Generic.List[string]]::new()
            while ($true) {
                $n = 0
                while ($n -lt $Block) { $m = $stream.Read($buffer, $n, $Block - $n); if ($m -le 0) { break }; $n += $m }
                if ($n -eq 0) { break }
                $list.Add([Convert]::ToBase64String($sha.ComputeHash($buffer, 0, $n)))
                if ($n -lt $Block) { break }
            }
            , $list.ToArray()
        }
        finally { $stream.Dispose(); $sha.Dispose() }
    }

    # Bytes of $New in 64 KiB blocks that differ from $Old at the same offset (blocks past $Old's end included):
    # what an incremental copy of $New built on $Old must write, the guest's file system metadata and its writer's
    # churn included.
    function Get-ChangedBlockBytes([string] $Old, [string] $New) {
        $a = Get-BlockHashes $Old
        $b = Get-BlockHashes $New
        $length = (Get-Item -LiteralPath $New).Length
        $changed = 0L
        for ($i = 0; $i -lt $b.Count; $i++) {
            if ($i -ge $a.Count -or $a[$i] -ne $b[$i]) { $changed += [Math]::Min($Block, $length - $i * $Block) }
        }
        $changed
    }

    # Bytes in use on the file system that holds $Path, as df counts them, once its writes reached the disk.
    function Get-UsedBytes([string] $Path) {
        & sync -f $Path
        [long]((& df -B1 --output=used $Path) | Select-Object -Last 1).Trim()
    }

    function Write-GuestChange([int] $MiB) {
        $r = Invoke-LabGuestCommand -DomainName $Vm -TimeoutSeconds 120 -Command "rm -f /mnt/b/change; sync; dd if=/dev/urandom of=/mnt/b/change bs=1M count=$MiB conv=fsync 2>/dev/null && sync"
        if ($r.ExitCode -ne 0) { throw "guest write failed: $($r.StdErr)" }
    }

    # What the lab sshd received, by the kernel's count per connection that ss -E prints as each connection closes:
    # only the connections opened while counting, only this server's (the loopback as a whole also carries other
    # people's bytes). Connections still open when the count stops are counted by what ss -i says they received so
    # far; StillOpen says how many.
    # ss runs through bash with every descriptor above 2 closed: it must never inherit the lab lock's descriptor
    # (flock's), which would keep the lab locked for as long as a stray ss lives.
    function Start-EventWatch([string] $File) {
        Start-Process -FilePath /bin/bash -RedirectStandardOutput $File -PassThru -ArgumentList '-c',
            '"for f in /proc/$$/fd/*; do n=${f##*/}; if [ $n -gt 2 ]; then eval \"exec $n<&-\"; fi; done 2>/dev/null; exec stdbuf -oL ss -E -H -tin sport = :2222"'
    }
    function Stop-EventWatch($Process) {
        if (-not $Process -or $Process.HasExited) { return }
        & kill -TERM $Process.Id
        if (-not $Process.WaitForExit(5000)) { & kill -KILL $Process.Id; $null = $Process.WaitForExit(5000) }
    }
    function Start-ServerByteCount {
        $file = Join-Path (New-TestFolder inc-ss) 'closed.txt'
        $process = Start-EventWatch $file
        Start-Sleep -Milliseconds 300   # ss listening
        [pscustomobject]@{ Process = $process; File = $file; OpenBefore = @(Get-ServerPeers) }
    }
    function Get-ServerPeers { @(& ss -Htn state established sport = :2222 | ForEach-Object { ($_.Trim() -split '\s+')[-1] }) }
    function Stop-ServerByteCount($Count) {
        $deadline = (Get-Date).AddSeconds(10)
        while (@(Get-ServerPeers | Where-Object { $_ -notin $Count.OpenBefore }).Count -and (Get-Date) -lt $deadline) { Start-Sleep -Milliseconds 100 }
        # A connection opened during the count and still open (a session kept for reuse, or anyone's): what it
        # received so far, from ss -i, is counted too.
        $open = @(& ss -Htin state established sport = :2222)
        Start-Sleep -Milliseconds 300
        Stop-EventWatch $Count.Process
        $closed = @(Get-Content -LiteralPath $Count.File) + $open
        $stillOpen = 0
        for ($i = 0; $i -lt $open.Count - 1; $i++) {
            if ($open[$i] -match '127\.0\.0\.1:2222\s+(\S+:\d+)\s*$' -and $Matches[1] -notin $Count.OpenBefore) { $stillOpen++ }
        }
        $bytes = 0L; $connections = 0
        for ($i = 0; $i -lt $closed.Count - 1; $i++) {
            if ($closed[$i] -notmatch '127\.0\.0\.1:2222\s+(\S+:\d+)\s*$') { continue }
            $peer = $Matches[1]
            if ($peer -in $Count.OpenBefore -or $closed[$i + 1] -notmatch 'bytes_received:(\d+)') { continue }
            $bytes += [long]$Matches[1]; $connections++
        }
        [pscustomobject]@{ Bytes = $bytes; Connections = $connections; StillOpen = $stillOpen }
    }

    # One backup of the VM by the README's pipeline. Between Copy-VmDisk and Invoke-BlockCommit each disk's frozen
    # source (the VM writes to its overlay meanwhile) is hashed with sha256sum: what a restore must give back.
    # Returns the objects, the set's local path, the frozen hashes, the bytes the loopback received meanwhile (every
    # user of lo counts: an upper bound of what the backup sent), for an SSH destination what the server received
    # (Stop-ServerByteCount), and the verbose and warning lines of the run.
    function Invoke-Backup([string] $Destination, [string] $LocalRoot, [switch] $Full, [int] $BandwidthLimit = 0) {
        $extra = @{}
        if ($Full) { $extra.Full = $true }   # only when asked: a build without -Full still takes the other backups
        if ($BandwidthLimit) { $extra.BandwidthLimit = $BandwidthLimit }
        $frozen = @{}
        $records = [Collections.Generic.List[object]]::new()
        $count = if ($Destination -like 'odakvm-backup:*') { Start-ServerByteCount }
        try {
            $lo = Get-LabLoopbackReceivedBytes
            $objects = @(& {
                    Get-VmDisk $Vm | New-KvmDiskSnapshot -Verbose | Copy-VmDisk -Destination $Destination -Verbose @extra |
                        ForEach-Object { $frozen[$_.Target] = Get-Sha256 $_.Source; $_ } |
                        Invoke-BlockCommit -Verbose | Move-OverlayToRetention -Path (New-TestFolder inc-ret) -Verbose
                } 4>&1 3>&1 | ForEach-Object {
                    if ($_ -is [Management.Automation.VerboseRecord] -or $_ -is [Management.Automation.WarningRecord]) { $records.Add($_) } else { $_ }
                })
            $wire = (Get-LabLoopbackReceivedBytes) - $lo
            $server = if ($count) { Stop-ServerByteCount $count }
        }
        finally { if ($count) { Stop-EventWatch $count.Process } }
        if ($objects.Count -ne 2) { throw "The backup to $Destination gave $($objects.Count) objects, not 2." }
        [pscustomobject]@{
            Objects = $objects; RunId = $objects[0].RunId; Set = Join-Path $LocalRoot "$Vm/$($objects[0].RunId)"
            Frozen = $frozen; Wire = $wire; Server = $server; Messages = @($records | ForEach-Object Message)
        }
    }

    # Two backups with a change of $ChangeMiB in between, and what was measured around the second.
    function Invoke-TwoBackups([string] $Destination, [string] $LocalRoot, [int] $ChangeMiB) {
        $first = Invoke-Backup $Destination $LocalRoot
        $firstState = Get-SetFileState $first.Set
        Write-GuestChange $ChangeMiB
        $used = Get-UsedBytes $LocalRoot
        $second = Invoke-Backup $Destination $LocalRoot
        $grown = (Get-UsedBytes $LocalRoot) - $used
        $changed = @{}
        foreach ($disk in $second.Objects) {
            $file = Split-Path $disk.BackupFile -Leaf
            $changed[$disk.Target] = Get-ChangedBlockBytes (Join-Path $first.Set $file) (Join-Path $second.Set $file)
        }
        [pscustomobject]@{
            First = $first; Second = $second; FirstState = $firstState; FirstStateAfter = Get-SetFileState $first.Set
            Grown = $grown; Changed = $changed; ChangedTotal = ($changed.Values | Measure-Object -Sum).Sum; ChangeMiB = $ChangeMiB
        }
    }

    # The bound on what the second backup may send and store: 1.2x the bytes that differ between the two copies,
    # counted in 64 KiB blocks, plus 0.01% of the disks' size (the issue's own bound). What differs is measured
    # between the copies themselves, so the guest's metadata and its writer's churn are in it: no other slack.
    function Get-IncrementalBound($Pair, [hashtable] $Sizes) {
        1.2 * $Pair.ChangedTotal + 0.0001 * ($Sizes.Values | Measure-Object -Sum).Sum
    }
    function Get-DiskSizes($Manifest) {
        $sizes = @{}
        foreach ($d in $Manifest.Disks) { $sizes[$d.Target] = [long](Get-Field $d 'SizeBytes') }
        $sizes
    }

    function Read-Byte([string] $Path, [long] $Offset) {
        $fs = [IO.File]::Open($Path, 'Open', 'Read', 'ReadWrite')
        try { $fs.Position = $Offset; $fs.ReadByte() } finally { $fs.Dispose() }
    }
    function Write-Byte([string] $Path, [long] $Offset, [int] $Value) {
        $fs = [IO.File]::Open($Path, 'Open', 'ReadWrite', 'ReadWrite')
        try { $fs.Position = $Offset; $fs.WriteByte([byte]$Value); $fs.Flush($true) } finally { $fs.Dispose() }
    }

    # The offset, in a copy of the raw data disk, of a byte of /mnt/b/base: written once before the first backup and
    # never again, so every set holds the same byte there, and so does the VM's disk. Found with debugfs (e2fsprogs)
    # in the copy's ext4: the physical block of a block in the middle of the file.
    function Get-UnchangedOffset([string] $RawCopy) {
        $stats = (& debugfs -R 'stats' $RawCopy 2>$null) -join "`n"
        if ($stats -notmatch 'Block size:\s+(\d+)') { throw "debugfs found no ext4 in $RawCopy" }
        $blockSize = [long]$Matches[1]
        $physical = ((& debugfs -R "bmap /base $([long](16MB / $blockSize) + 3)" $RawCopy 2>$null) -join '').Trim()
        if ($physical -notmatch '^\d+$' -or [long]$physical -eq 0) { throw "debugfs bmap of /base in $RawCopy gave '$physical'" }
        [long]$physical * $blockSize + 100
    }

    # Set 1 removed (by -Remove), set 2 alone: Test-KvmBackup passes where the set lies, and Restore-KvmBackup
    # under a new name gives back files byte for byte equal to the frozen source of the second backup.
    function Assert-RestoresAlone([string] $Location, $Pair, [scriptblock] $Remove) {
        & $Remove
        Test-Path -LiteralPath $Pair.First.Set | Should -BeFalse
        $set = @(Get-KvmBackup -Path $Location -DomainName $Vm)
        $set.Count | Should -Be 1 -Because 'only the second set is left'
        $set[0].RunId | Should -Be $Pair.Second.RunId
        $test = $set | Test-KvmBackup
        $test.Passed | Should -BeTrue
        $target = New-TestFolder inc-restore
        $name = "lab_inc_$([guid]::NewGuid().ToString('N').Substring(0, 6))"
        try {
            $restored = $set | Restore-KvmBackup -Destination $target -NewName $name -Confirm:$false
            $restored.DomainName | Should -Be $name
            $chain = @(Get-DiskChain $name -Inactive)
            ($chain.Target | Sort-Object) -join ',' | Should -Be 'vda,vdb'
            foreach ($disk in $chain) {
                Split-Path $disk.Source | Should -Be $target
                $disk.Chain.Count | Should -Be 0
                Get-Sha256 $disk.Source | Should -Be $Pair.Second.Frozen[$disk.Target] -Because "the restored $($disk.Target) must be the frozen source of the second backup"
            }
        }
        finally { $null = Invoke-Virsh @('undefine', $name) -AllowFailure }
    }

    # A byte of the newest set's raw copy flips on the destination's storage, in a block the guest never changed;
    # the next backup must find it (its base rotted), send that part again, name the damaged set, and be right.
    function Assert-RotNotInherited([string] $Location, [string] $LocalRoot, $Base) {
        $copy = Join-Path $Base.Set 'disco_secundario'
        $offset = Get-UnchangedOffset $copy
        $good = Read-Byte $copy $offset
        Read-Byte (Get-LabDiskPath -Name $Vm -Disk data) $offset | Should -Be $good -Because 'the guest never changed this byte'
        Write-Byte $copy $offset (($good + 1) % 256)
        $next = Invoke-Backup $Location $LocalRoot
        $manifest = Get-Manifest $next.Set
        $vdb = Get-ManifestDisk $manifest vdb
        $manifest.Status | Should -Be 'Complete'
        Get-Field $vdb 'BasedOn' | Should -Be $Base.RunId
        Get-Field $vdb 'BytesResent' | Should -BeGreaterThan 0 -Because 'the rotted part of the base was sent again'
        Read-Byte (Join-Path $next.Set 'disco_secundario') $offset | Should -Be $good -Because 'the rotted byte must not be inherited'
        Get-Sha256 (Join-Path $next.Set 'disco_secundario') | Should -Be $next.Frozen['vdb']
        Read-Byte $copy $offset | Should -Be (($good + 1) % 256) -Because 'the base set is never written to'
        $named = @($next.Messages | Where-Object { $_ -match [regex]::Escape($Base.RunId) })
        ($named -join "`n") | Should -Match 'damaged|rotted|\brot\b|does not match' -Because "a warning or -Verbose line names the base set $($Base.RunId) as damaged; Copy-VmDisk said:`n$($next.Messages -join "`n")"
        Write-Result ("rot in {0}: vdb BytesResent {1:N0}, BytesSent {2:N0}" -f $Base.RunId, (Get-Field $vdb 'BytesResent'), (Get-Field $vdb 'BytesSent'))
        $next
    }

    # The bytes the server received during the second backup, counted per connection: the issue's bound (1.2x the
    # bytes that differ in 64 KiB blocks + 0.01% of the disks' size) plus ssh's own cost: 64 KiB per connection (key
    # exchange, authentication, the module's commands and the digests it sends to the server) and 2% of the data
    # sent (SSH packet and SFTP request headers).
    function Assert-ServerReceived($Pair, [long] $Sent) {
        $server = $Pair.Second.Server
        $server.StillOpen | Should -Be 0 -Because 'Copy-VmDisk closes its SSH session when its pipeline is done: a nightly script must not pile up one connection per backup'
        $server.Connections | Should -BeGreaterThan 0
        $sizes = Get-DiskSizes (Get-Manifest $Pair.Second.Set)
        $bound = 1.02 * (Get-IncrementalBound $Pair $sizes) + 64KB * $server.Connections
        Write-Result ("  the server received {0:N0} bytes on {1} connections ({6} still open at the end) during the second backup (bound {2:N0}; BytesSent {3:N0}; lo {4:N0}); {5:N0} during the first" -f $server.Bytes, $server.Connections, $bound, $Sent, $Pair.Second.Wire, $Pair.First.Server.Bytes, $server.StillOpen)
        $server.Bytes | Should -BeLessOrEqual $bound -Because "$($Pair.ChangedTotal) bytes differ between the sets' copies in 64 KiB blocks"
    }

    function Write-Result([string] $Line) { Add-Content -Path $Results -Value $Line; Write-Host "[incremental] $Line" }

    # The first set: a full copy of each disk, with its digest list beside it, Complete.
    function Assert-FullFirstSet($Backup) {
        $manifest = Get-Manifest $Backup.Set
        $manifest.Status | Should -Be 'Complete'
        $manifest.Format | Should -Be 'OdaKvmBackup/3'
        foreach ($target in 'vda', 'vdb') {
            $disk = Get-ManifestDisk $manifest $target
            Get-Field $disk 'StoredAs' | Should -Be 'full' -Because "$target of the first set has no set to be based on"
            Get-Field $disk 'BasedOn' | Should -BeNullOrEmpty
            [long](Get-Field $disk 'BytesCloned') | Should -Be 0
            $list = Join-Path $Backup.Set "$($disk.File).digests"
            Test-Path -LiteralPath $list | Should -BeTrue -Because "the digest list of $target lies beside its copy"
            Get-Field $disk 'Digests' | Should -Be (Get-Sha256 $list) -Because 'the manifest records the SHA-256 of the list'
            (Get-Sha256 (Join-Path $Backup.Set $disk.File)) | Should -Be $Backup.Frozen[$target] -Because "the copy of $target holds what its frozen source held"
        }
    }

    # The second set: built on the first, sent and stored at about the cost of what changed, Complete, correct. The
    # raw data disk first: it always keeps its size. Each disk's BytesSent is held to the issue's bound on its own
    # bytes that differ. Returns the bytes sent in all.
    function Assert-IncrementalSecondSet($Pair, [string] $StoredAs) {
        $manifest = Get-Manifest $Pair.Second.Set
        $manifest.Status | Should -Be 'Complete'
        $manifest.Format | Should -Be 'OdaKvmBackup/3'
        $Pair.Changed['vdb'] | Should -BeGreaterOrEqual ($Pair.ChangeMiB * 1MB) -Because 'the guest wrote that much random data on vdb between the backups'
        $sent = 0L
        foreach ($target in 'vdb', 'vda') {
            $disk = Get-ManifestDisk $manifest $target
            Get-Field $disk 'BasedOn' | Should -Be $Pair.First.RunId -Because "$target has a Complete base of the same format and virtual size at this destination (FullBecause: $(Get-Field $disk 'FullBecause'))"
            Get-Field $disk 'StoredAs' | Should -Be $StoredAs
            Get-Field $disk 'BytesCloned' | Should -BeGreaterThan 0
            Get-Field $disk 'BytesResent' | Should -Be 0 -Because 'nothing in the first set rotted'
            (Get-Sha256 (Join-Path $Pair.Second.Set $disk.File)) | Should -Be $Pair.Second.Frozen[$target] -Because "the copy of $target holds what its frozen source held"
            $list = Join-Path $Pair.Second.Set "$($disk.File).digests"
            Get-Field $disk 'Digests' | Should -Be (Get-Sha256 $list)
            $bytes = [long](Get-Field $disk 'BytesSent')
            $bound = 1.2 * $Pair.Changed[$target] + 0.0001 * [long](Get-Field $disk 'SizeBytes')
            $bytes | Should -BeLessOrEqual $bound -Because "$($Pair.Changed[$target]) bytes of $target differ between the two sets' copies, in 64 KiB blocks"
            $sent += $bytes
        }
        $sent | Should -BeGreaterOrEqual ($Pair.ChangeMiB * 1MB) -Because 'the random data the guest wrote cannot be in the first set: it must be sent'
        $sent
    }
}

Describe 'Incremental backups to an SSH server whose folder is on XFS with reflink' {
    AfterAll { Assert-GuestTicks $Vm }
    BeforeAll {
        $script:remote = Join-Path $XfsSsh "inc-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        New-Item -ItemType Directory -Path $remote | Out-Null
        $script:location = "odakvm-backup:$remote"
        $script:pair = Invoke-TwoBackups $location $remote 12
        $script:data = ((Get-Manifest $pair.Second.Set).Disks | ForEach-Object { [long](Get-Field $_ 'DataBytes') } | Measure-Object -Sum).Sum
        Write-Result ("SSH/XFS: first backup {0:N0} bytes on lo, {1:N0} received by the server; second: {2:N0} bytes differ in 64 KiB blocks (vda {3:N0}, vdb {4:N0}), {5:N0} bytes on lo, {6:N0} received by the server, df of the XFS grew {7:N0}; set data {8:N0}" -f `
                $pair.First.Wire, $pair.First.Server.Bytes, $pair.ChangedTotal, $pair.Changed['vda'], $pair.Changed['vdb'], $pair.Second.Wire, $pair.Second.Server.Bytes, $pair.Grown, $data)
    }

    It 'makes the first set a full one: StoredAs full, based on nothing, a digest list beside each copy, Complete' {
        Assert-FullFirstSet $pair.First
    }

    It 'builds the second set on the first (reflink) and sends about what changed, measured on the wire' {
        $sent = Assert-IncrementalSecondSet $pair 'reflink'
        Write-Result ("SSH/XFS: second backup BytesSent {0:N0}, bound {1:N0}" -f $sent, (Get-IncrementalBound $pair (Get-DiskSizes (Get-Manifest $pair.Second.Set))))
        # The loopback counts every byte any process sent on lo meanwhile: an upper bound of what the backup sent.
        $pair.Second.Wire | Should -BeLessThan ($data / 3) -Because "the set holds $data bytes of data; only what changed ($($pair.ChangedTotal) bytes) may cross"
        $pair.Second.Wire | Should -BeLessThan ($pair.First.Wire / 2) -Because "the first, full backup put $($pair.First.Wire) bytes on lo"
        Assert-ServerReceived $pair $sent
    }

    It 'grows the server''s used space by about what changed, not by the disks'' data' {
        $small = (Get-ChildItem -LiteralPath $pair.Second.Set -File | Where-Object Name -notin 'linux_boot', 'disco_secundario' | ForEach-Object { Get-AllocatedBytes $_.FullName } | Measure-Object -Sum).Sum
        $bound = (Get-IncrementalBound $pair (Get-DiskSizes (Get-Manifest $pair.Second.Set))) + $small
        $pair.Grown | Should -BeLessOrEqual $bound -Because "df of the XFS grew $($pair.Grown) bytes; $($pair.ChangedTotal) bytes changed, the set's manifest, domain.xml and lists take $small"
        $pair.Grown | Should -BeLessThan ($data / 3)
    }

    It 'leaves every file of the first set as it was: content, size and time' {
        $pair.FirstState.Count | Should -BeGreaterOrEqual 6 -Because 'the set holds 2 copies, 2 lists, backup.json and domain.xml'
        $pair.FirstStateAfter | Should -Be $pair.FirstState
    }

    It 'restores the second set alone once the first is removed (Remove-KvmBackup), byte for byte as the frozen source' {
        Assert-RestoresAlone $location $pair {
            Get-KvmBackup -Path $location -DomainName $Vm | Where-Object RunId -eq $pair.First.RunId | Remove-KvmBackup -Confirm:$false
        }
    }

    It 'does not inherit a byte that rotted in the base set: sends it again and names the damaged set' {
        $script:third = Assert-RotNotInherited $location $remote $pair.Second
    }

    It 'resumes an incremental copy whose connection drops in the middle: nothing sent again, the set Complete and right' {
        $base = Get-KvmBackup -Path $location -DomainName $Vm -Status Complete -Latest
        $baseSet = Join-Path $remote "$Vm/$($base.RunId)"
        Write-GuestChange 12
        $folder = New-TestFolder inc-cut
        $hashes = Join-Path $folder 'frozen.txt'
        # 4 MiB/s: the copy lasts long enough to be cut well inside it.
        $job = Start-Job -ScriptBlock {
            param($manifest, $location, $retention, $state, $vm, $hashes)
            $env:ODAKVMBACKUP_STATE_DIR = $state
            Import-Module $manifest
            Get-VmDisk $vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $location -BandwidthLimit 4 |
                ForEach-Object { Add-Content -Path $hashes -Value "$($_.Target) $(((& sha256sum -- $_.Source) -split '\s+')[0])"; $_ } |
                Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        } -ArgumentList $ModuleManifest, $location, (New-TestFolder inc-cut-ret), $env:ODAKVMBACKUP_STATE_DIR, $Vm, $hashes
        $ss = $null
        try {
            Wait-Until { $job.State -ne 'Running' -or (Get-ChildItem -Recurse -Filter 'disco_secundario.partial' -Path (Join-Path $remote $Vm) -ErrorAction SilentlyContinue) } 'the incremental copy of vdb on the server' 120
            $job.State | Should -Be 'Running' -Because "the cut must hit the copy: $($job.ChildJobs[0].Error | Out-String)"
            $lo = Get-LabLoopbackReceivedBytes
            Wait-Until { $job.State -ne 'Running' -or (Get-LabLoopbackReceivedBytes) - $lo -ge 3MB } '3 MiB sent into the incremental copy' 60
            # What the server received on each connection, by the kernel's count that ss -E prints as it closes: the
            # ones open at the cut (before it) and the ones opened after it.
            $events = Join-Path $folder 'closed.txt'
            $ss = Start-EventWatch $events
            Start-Sleep -Milliseconds 300
            $openAtCut = @(& ss -Htn state established sport = :2222 | ForEach-Object { ($_.Trim() -split '\s+')[-1] })
            (Stop-LabSshSession) | Should -BeGreaterThan 0 -Because 'the copy has connections open'
            $objects = @($job | Wait-Job -Timeout 300 | Receive-Job -ErrorVariable jobErrors)
        }
        finally {
            if ($job.State -eq 'Running') { $job | Stop-Job }
            $null = Start-LabSshd
            if ($ss) { Start-Sleep -Milliseconds 500; Stop-EventWatch $ss }
        }
        $closed = @(Get-Content -LiteralPath $events)
        $before = 0L; $after = 0L; $connections = 0
        for ($i = 0; $i -lt $closed.Count - 1; $i++) {
            if ($closed[$i] -notmatch '127\.0\.0\.1:2222\s+(\S+:\d+)\s*$') { continue }
            $peer = $Matches[1]
            if ($closed[$i + 1] -notmatch 'bytes_received:(\d+)') { continue }
            if ($peer -in $openAtCut) { $before += [long]$Matches[1] } else { $after += [long]$Matches[1]; $connections++ }
        }
        $jobErrors | Should -BeNullOrEmpty
        $objects.Count | Should -Be 2
        $set = Join-Path $remote "$Vm/$($objects[0].RunId)"
        $manifest = Get-Manifest $set
        $manifest.Status | Should -Be 'Complete'
        $frozen = @{}
        foreach ($line in Get-Content -LiteralPath $hashes) { $t, $h = $line -split ' '; $frozen[$t] = $h }
        # What the backup had to send: for a disk copied on its base the bytes that differ from it (64 KiB blocks),
        # for one copied in full its data (the sparse copy's allocated bytes).
        $changed = 0L
        foreach ($target in 'vdb', 'vda') {
            $disk = Get-ManifestDisk $manifest $target
            Get-Sha256 (Join-Path $set $disk.File) | Should -Be $frozen[$target] -Because "the copy of $target holds what its frozen source held"
            $changed += if ((Get-Field $disk 'StoredAs') -eq 'full') { Get-AllocatedBytes (Join-Path $set $disk.File) }
            else { Get-ChangedBlockBytes (Join-Path $baseSet $disk.File) (Join-Path $set $disk.File) }
        }
        $vdb = Get-ManifestDisk $manifest vdb
        Write-Result ("cut: {0:N0} bytes to send; the server received {1:N0} bytes before the cut, {2:N0} after it on {3} new connections; vdb BytesSent {4:N0}" -f $changed, $before, $after, $connections, (Get-Field $vdb 'BytesSent'))
        Get-Field $vdb 'BasedOn' | Should -Be $base.RunId
        Get-Field $vdb 'StoredAs' | Should -Be 'reflink'
        $connections | Should -BeGreaterThan 0 -Because 'the copy went on over new connections'
        $before | Should -BeGreaterThan 2MB -Because 'the cut must come well inside the copy'
        $after | Should -BeLessThan ($changed - $before / 2) -Because "a resumed copy sends only what the server did not hold yet ($changed bytes to send, $before reached the server before the cut)"
        Test-OnOwnDisks $Vm | Should -BeTrue
        $vda = Get-ManifestDisk $manifest vda
        Get-Field $vda 'BasedOn' | Should -Be $base.RunId -Because "vda has a Complete base of the same format and virtual size (FullBecause: $(Get-Field $vda 'FullBecause'))"
    }

    It 'leaves the VM on its own disks, the new set Incomplete or absent and the base untouched, when SIGTERM stops an incremental copy' {
        $base = Get-KvmBackup -Path $location -DomainName $Vm -Status Complete -Latest
        $baseSet = Join-Path $remote "$Vm/$($base.RunId)"
        $baseState = Get-SetFileState $baseSet
        $setsBefore = @(Get-ChildItem -LiteralPath (Join-Path $remote $Vm) -Directory | ForEach-Object Name)
        Write-GuestChange 12
        $folder = New-TestFolder inc-sigterm
        $process = Start-BackupProcess @"
`$ErrorView = 'NormalView'; `$PSStyle.OutputRendering = 'PlainText'
Import-Module '$ModuleManifest'
Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination '$location' -BandwidthLimit 4 | Invoke-BlockCommit | Move-OverlayToRetention -Path '$(New-TestFolder inc-sigterm-ret)'
"@ $folder
        try {
            Wait-Until { $process.HasExited -or (Get-ChildItem -Recurse -Filter 'disco_secundario.partial' -Path (Join-Path $remote $Vm) -ErrorAction SilentlyContinue) } 'the incremental copy of vdb on the server' 120
            $process.HasExited | Should -BeFalse -Because "the signal must hit the copy: $(Get-Content -Raw (Join-Path $folder 'stderr.txt'))"
            Start-Sleep -Seconds 2
            Test-OnOwnDisks $Vm | Should -BeFalse -Because 'the signal must find the VM on its overlays'
            & kill -TERM $process.Id
            $process.WaitForExit(120000) | Should -BeTrue
        }
        finally { if (-not $process.HasExited) { Stop-ProcessTree $process.Id; $null = $process.WaitForExit(10000) } }
        $process.ExitCode | Should -Be 143
        (Get-Content -Raw (Join-Path $folder 'stderr.txt')) -replace '\s+', ' ' | Should -Match "SIGTERM.*'$Vm' was put back on its own disks"
        (Invoke-Virsh @('domblklist', $Vm)).StdOut | Should -Not -Match ([regex]::Escape($SnapshotName)) -Because 'no disk is left on an overlay'
        Test-OnOwnDisks $Vm | Should -BeTrue
        foreach ($set in Get-ChildItem -LiteralPath (Join-Path $remote $Vm) -Directory | Where-Object Name -notin $setsBefore) {
            (Get-Manifest $set.FullName).Status | Should -Be 'Incomplete'
        }
        Get-ChildItem -Recurse -Filter '*.partial' -Path $remote | Should -BeNullOrEmpty
        Get-SetFileState $baseSet | Should -Be $baseState -Because 'the base set is never written to'
    }
}

Describe 'Incremental backups to a local folder on XFS with reflink' {
    AfterAll { Assert-GuestTicks $Vm }
    BeforeAll {
        Reset-LabVmIfNeeded $Vm
        Initialize-GuestData
        $script:local = Join-Path $XfsLocal "inc-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        New-Item -ItemType Directory -Path $local | Out-Null
        $script:pair = Invoke-TwoBackups $local $local 12
        $script:data = ((Get-Manifest $pair.Second.Set).Disks | ForEach-Object { [long](Get-Field $_ 'DataBytes') } | Measure-Object -Sum).Sum
        Write-Result ("local XFS: second backup: {0:N0} bytes differ in 64 KiB blocks (vda {1:N0}, vdb {2:N0}), df of the XFS grew {3:N0}; set data {4:N0}" -f `
                $pair.ChangedTotal, $pair.Changed['vda'], $pair.Changed['vdb'], $pair.Grown, $data)
    }

    It 'makes the first set a full one: StoredAs full, based on nothing, a digest list beside each copy, Complete' {
        Assert-FullFirstSet $pair.First
    }

    It 'builds the second set on the first (reflink) and writes about what changed' {
        $sent = Assert-IncrementalSecondSet $pair 'reflink'
        Write-Result ("local XFS: second backup BytesSent {0:N0}" -f $sent)
        $sent | Should -BeLessThan ($data / 3)
    }

    It 'grows the destination''s used space by about what changed, not by the disks'' data' {
        $small = (Get-ChildItem -LiteralPath $pair.Second.Set -File | Where-Object Name -notin 'linux_boot', 'disco_secundario' | ForEach-Object { Get-AllocatedBytes $_.FullName } | Measure-Object -Sum).Sum
        $bound = (Get-IncrementalBound $pair (Get-DiskSizes (Get-Manifest $pair.Second.Set))) + $small
        $pair.Grown | Should -BeLessOrEqual $bound -Because "df of the XFS grew $($pair.Grown) bytes; $($pair.ChangedTotal) bytes changed, the set's manifest, domain.xml and lists take $small"
        $pair.Grown | Should -BeLessThan ($data / 3)
    }

    It 'leaves every file of the first set as it was: content, size and time' {
        $pair.FirstState.Count | Should -BeGreaterOrEqual 6
        $pair.FirstStateAfter | Should -Be $pair.FirstState
    }

    It 'restores the second set alone once the first is deleted by hand (rm -rf), byte for byte as the frozen source' {
        Assert-RestoresAlone $local $pair { & rm -rf -- $pair.First.Set }
    }

    It 'does not inherit a byte that rotted in the base set: writes it again and names the damaged set' {
        $null = Assert-RotNotInherited $local $local $pair.Second
    }
}

Describe 'Incremental backups to an SSH server without reflink (ext4)' {
    AfterAll { Assert-GuestTicks $Vm }
    BeforeAll {
        Reset-LabVmIfNeeded $Vm
        Initialize-GuestData
        $script:remote = New-TestFolder inc-ext4
        $script:location = "odakvm-backup:$remote"
        $script:pair = Invoke-TwoBackups $location $remote 8
        $script:data = ((Get-Manifest $pair.Second.Set).Disks | ForEach-Object { [long](Get-Field $_ 'DataBytes') } | Measure-Object -Sum).Sum
        Write-Result ("SSH/ext4: first backup {0:N0} bytes on lo, {1:N0} received by the server; second: {2:N0} bytes differ in 64 KiB blocks, {3:N0} bytes on lo, {4:N0} received by the server; set data {5:N0}" -f `
                $pair.First.Wire, $pair.First.Server.Bytes, $pair.ChangedTotal, $pair.Second.Wire, $pair.Second.Server.Bytes, $data)
    }

    It 'is a folder where the file system cannot clone (cp --reflink=always fails there)' {
        $probe = Join-Path $remote 'reflink-probe'
        Set-Content -LiteralPath $probe -Value 'probe'
        & cp --reflink=always -- $probe "$probe.clone" 2>$null
        $LASTEXITCODE | Should -Not -Be 0
        Remove-Item -LiteralPath $probe, "$probe.clone" -Force -ErrorAction SilentlyContinue
    }

    It 'still sends only what changed, and the set says it was stored as a local copy' {
        $sent = Assert-IncrementalSecondSet $pair 'local copy'
        Write-Result ("SSH/ext4: second backup BytesSent {0:N0}" -f $sent)
        $pair.Second.Wire | Should -BeLessThan ($data / 3) -Because "the set holds $data bytes of data; only what changed ($($pair.ChangedTotal) bytes) may cross"
        $pair.Second.Wire | Should -BeLessThan ($pair.First.Wire / 2)
        Assert-ServerReceived $pair $sent
        $pair.FirstStateAfter | Should -Be $pair.FirstState
    }

    It 'copies every disk in full with -Full: StoredAs full, based on nothing, about the whole data sent' {
        $full = Invoke-Backup $location $remote -Full
        $manifest = Get-Manifest $full.Set
        $manifest.Status | Should -Be 'Complete'
        foreach ($target in 'vda', 'vdb') {
            $disk = Get-ManifestDisk $manifest $target
            Get-Field $disk 'StoredAs' | Should -Be 'full'
            Get-Field $disk 'BasedOn' | Should -BeNullOrEmpty
            Get-Field $disk 'FullBecause' | Should -Match 'Full'
            $dataBytes = [long](Get-Field $disk 'DataBytes')
            $dataBytes | Should -BeGreaterThan 1MB
            [long](Get-Field $disk 'BytesSent') | Should -BeGreaterOrEqual (0.95 * $dataBytes) -Because "$target holds $dataBytes bytes of data, all sent again"
            Get-Sha256 (Join-Path $full.Set $disk.File) | Should -Be $full.Frozen[$target]
        }
        Write-Result ("SSH/ext4 -Full: {0:N0} bytes on lo for {1:N0} bytes of data" -f $full.Wire, (($manifest.Disks | ForEach-Object { [long](Get-Field $_ 'DataBytes') }) | Measure-Object -Sum).Sum)
    }
}
