# Backups off the host: Copy-VmDisk -Destination <ssh alias>:/path, to a real sshd on loopback that reaches root's
# own ~/.ssh/config (aliases, keys, known_hosts), on the real lab (issue: off the host, at the speed of the disk).
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    $script:Sshd = Start-LabSshd   # throws, failing every test here, when sshd cannot start

    function Get-Manifest([string] $Set) { Get-Content -Raw (Join-Path $Set 'backup.json') | ConvertFrom-Json }
    function Get-Mode([string] $Path) { (& stat -c '%a' -- $Path).Trim() }
    # The server is this machine: a path on it is also a local path, which the checks read directly.
    function New-RemoteFolder([string] $Name) { New-TestFolder $Name }
    function Get-VmState { [pscustomobject]@{ Inactive = (Invoke-Virsh @('dumpxml', 'linux_vm', '--inactive')).StdOut; Snapshots = @(Get-SnapshotNames linux_vm); Stray = @(Get-StrayDiskFolderFiles linux_vm) } }
}
AfterAll { Save-FaultRows 'SshDestination' }

Describe 'A hot backup to an SSH server' {
    AfterAll { Assert-GuestTicks linux_vm }
    BeforeAll {
        $script:remote = New-RemoteFolder ssh-dest
        $script:retention = New-TestFolder ssh-ret
        # Data enough that ssh's own fixed cost (handshakes, a few KiB per connection) does not decide the ratio.
        $r = Invoke-LabGuestCommand -DomainName linux_vm -Command 'dd if=/dev/urandom of=/mnt/b/wire bs=1M count=16 conv=fsync 2>/dev/null; sync'
        if ($r.ExitCode -ne 0) { throw "guest write failed: $($r.StdErr)" }
        $received = Get-LabLoopbackReceivedBytes
        $script:objects = Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination "root@odakvm-backup:$remote" |
            Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        $script:onWire = (Get-LabLoopbackReceivedBytes) - $received
        $script:set = Join-Path $remote "linux_vm/$($objects[0].RunId)"
    }

    It 'is Complete, verified on the server, and leaves the VM on its own disks' {
        @($objects).Count | Should -Be 2
        $objects.SetStatus | Sort-Object -Unique | Should -Be 'Complete'
        $objects[0].BackupSet | Should -Be "root@odakvm-backup:$set"
        $manifest = Get-Manifest $set
        $manifest.Status | Should -Be 'Complete'
        foreach ($disk in $manifest.Disks) {
            $disk.Verified | Should -BeTrue
            $disk.VerifiedBy | Should -Match 'on the server.*computed there with python3'
            @($disk.SegmentDigests.PSObject.Properties).Count | Should -BeGreaterThan 0
        }
        Test-OnOwnDisks linux_vm | Should -BeTrue
        Get-StrayDiskFolderFiles linux_vm | Should -BeNullOrEmpty
    }

    It 'stores copies that pass qemu-img check and e2fsck, with the same layout as a local set' {
        @(Get-ChildItem -File $set).Name | Sort-Object | Should -Be @('backup.json', 'disco_secundario', 'domain.xml', 'linux_boot')
        foreach ($file in 'linux_boot', 'disco_secundario') {
            Test-ImageCheck (Join-Path $set $file) | Should -BeTrue
            (Test-LabImageFileSystem -Path (Join-Path $set $file)).Clean | Should -BeTrue
        }
        Get-ImageFormat (Join-Path $set 'linux_boot') | Should -Be 'qcow2'
        Get-ImageFormat (Join-Path $set 'disco_secundario') | Should -Be 'raw'
    }

    It 'keeps the fully allocated vdisk sparse on the server and sends little more than its data' {
        $copy = Join-Path $set 'disco_secundario'
        (Get-Item $copy).Length | Should -Be (Get-Item (Get-LabDiskPath -Name linux_vm -Disk data)).Length
        Get-AllocatedBytes $copy | Should -BeLessThan ((Get-Item $copy).Length / 2)
        $data = ($objects | Measure-Object -Property CopiedBytes -Sum).Sum
        Add-Content -Path (Join-Path $RepoRoot 'out/ssh-results.txt') -Value ("bytes on the wire {0:N0} for {1:N0} bytes of data: {2:0.000}x" -f $onWire, $data, ($onWire / $data))
        $onWire | Should -BeLessOrEqual ($data * 1.1) -Because 'holes and runs of zeros are not sent'
    }

    It 'makes the remote set private: files 0600, folders 0700' {
        Get-Mode (Join-Path $remote 'linux_vm') | Should -Be '700'
        Get-Mode $set | Should -Be '700'
        foreach ($file in Get-ChildItem -File $set) { Get-Mode $file.FullName | Should -Be '600' }
    }
}

Describe 'Sets on an SSH server: listed, tested on the server, restored' {
    AfterAll { Assert-GuestTicks linux_vm }
    BeforeAll {
        $script:remote = New-RemoteFolder ssh-wayback
        $script:location = "odakvm-backup:$remote"
        $script:objects = Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $location |
            Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ssh-wayback-ret)
        $script:setPath = Join-Path $remote "linux_vm/$($objects[0].RunId)"
    }

    It 'lists the set with Get-KvmBackup, read through SSH' {
        $sets = @(Get-KvmBackup -Path $location -DomainName 'linux*')
        $sets.Count | Should -Be 1
        $sets[0].RunId | Should -Be $objects[0].RunId
        $sets[0].Status | Should -Be 'Complete'
        $sets[0].Disks.Count | Should -Be 2
    }

    It 'tests it where it lies (on the server), and names the damaged disk once a byte of its copy changes' {
        # The copies are read on the server: only digests cross the connection, far less than the copies' data.
        $set = Get-KvmBackup -Path $location -DomainName linux_vm
        $lo = Get-LabLoopbackReceivedBytes
        $good = $set | Test-KvmBackup
        $wire = (Get-LabLoopbackReceivedBytes) - $lo
        $good.Passed | Should -BeTrue
        $good.ReadWhere | Should -Match 'server'
        $data = $set.DataBytes
        Write-Host "Test-KvmBackup of a set on the server: $wire bytes on the wire for $data bytes of data"
        $data | Should -BeGreaterThan 1MB
        $wire | Should -BeLessThan ($data / 4) -Because "the copies hold $data bytes of data and must not travel to be checked"
        # One byte of the raw copy changes on the server's disk, inside a segment that holds data.
        $copy = Join-Path $setPath 'disco_secundario'
        $manifest = Get-Content -Raw (Join-Path $setPath 'backup.json') | ConvertFrom-Json
        $segment = [long]@($manifest.Disks | Where-Object Target -eq vdb)[0].SegmentDigests.PSObject.Properties.Name[0]
        $fs = [IO.File]::Open($copy, 'Open', 'ReadWrite')
        try {
            $offset = $segment * 16MB + 1024
            $fs.Position = $offset; $b = $fs.ReadByte(); $fs.Position = $offset; $fs.WriteByte(($b + 1) % 256)
        }
        finally { $fs.Dispose() }
        $bad = Get-KvmBackup -Path $location -DomainName linux_vm | Test-KvmBackup -ErrorVariable damaged -ErrorAction SilentlyContinue
        $bad.Passed | Should -BeFalse
        ($damaged | ForEach-Object { $_.FullyQualifiedErrorId }) | Should -Contain 'BackupCopyDamaged,OdaKvmBackup.Commands.TestKvmBackupCommand'
        ($damaged | Out-String) | Should -Match 'vdb'
        ($bad.Disks | Where-Object Target -eq vdb).Passed | Should -BeFalse
        ($bad.Disks | Where-Object Target -eq vda).Passed | Should -BeTrue
        # Put the byte back for the restore below.
        $fs = [IO.File]::Open($copy, 'Open', 'ReadWrite')
        try { $fs.Position = $offset; $fs.WriteByte($b) } finally { $fs.Dispose() }
    }

    It 'restores it to a local folder, streamed back sparse and checked' {
        $target = New-TestFolder ssh-restore
        $restored = Get-KvmBackup -Path $location -DomainName linux_vm | Restore-KvmBackup -Destination $target -Confirm:$false
        $restored.Disks.Count | Should -Be 2
        foreach ($file in 'linux_boot', 'disco_secundario') {
            $local = @(Get-ChildItem -Recurse -File $target | Where-Object Name -eq $file)
            $local.Count | Should -Be 1
            & qemu-img compare -f (Get-ImageFormat $local[0].FullName) -F (Get-ImageFormat $local[0].FullName) $local[0].FullName (Join-Path $setPath $file) | Out-Null
            $LASTEXITCODE | Should -Be 0 -Because "$file restored must equal the copy on the server"
        }
        $raw = @(Get-ChildItem -Recurse -File $target | Where-Object Name -eq 'disco_secundario')[0]
        Get-AllocatedBytes $raw.FullName | Should -BeLessThan ($raw.Length / 2) -Because 'the restore is sparse'
    }
}

Describe 'Host keys are always checked' {
    It 'refuses an <Alias> host key before any snapshot, leaves the VM and known_hosts untouched, and says how to fix it' -ForEach @(
        @{ Alias = 'odakvm-unknown'; Id = 'SshHostKeyUnknown'; Fix = 'ssh-keyscan|known_hosts'; KnownHosts = 'known_hosts.unknown' }
        @{ Alias = 'odakvm-changed'; Id = 'SshHostKeyChanged'; Fix = 'ssh-keygen .*-R'; KnownHosts = 'known_hosts.changed' }
    ) {
        $knownHosts = Join-Path (Get-LabSshRoot) $KnownHosts
        $keysBefore = [IO.File]::ReadAllBytes($knownHosts)
        $before = Get-VmState
        $before.Inactive | Should -Match '<domain' -Because 'the state compared afterwards must be a real one'
        $errors = @()
        $records = [System.Collections.Generic.List[object]]::new()
        $probe = Start-LibvirtSnapshotLog
        try {
            & {
                Get-VmDisk linux_vm | New-KvmDiskSnapshot -Verbose | Copy-VmDisk -Destination "${Alias}:$(New-RemoteFolder key)" -Verbose |
                    Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder key-ret)
            } 4>&1 | ForEach-Object { $records.Add($_) }
        }
        catch { $errors += $_ }
        finally { $asked = Stop-LibvirtSnapshotLog $probe linux_vm }
        # What the module ran: ssh to the server, and no snapshot-create-as. What libvirtd received: no snapshot
        # request for the VM, not even one refused or undone.
        $ran = @($records | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object Message)
        @($ran | Where-Object { $_ -like "Starting: ssh *$Alias sftp" }).Count | Should -BeGreaterThan 0 -Because 'the host key is checked by connecting'
        @($ran | Where-Object { $_ -like '*snapshot-create-as*' }) | Should -BeNullOrEmpty
        $asked | Should -BeNullOrEmpty
        @($records | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }) | Should -BeNullOrEmpty
        $errors.Count | Should -Be 1
        $errors[0].FullyQualifiedErrorId | Should -Be "$Id,OdaKvmBackup.Commands.CopyVmDiskCommand"
        $errors[0].ToString() | Should -Match '127\.0\.0\.1|odakvm'
        $errors[0].ToString() | Should -Match $Fix
        $errors[0].ToString() | Should -Match 'never (adds|replaces)'
        [IO.File]::ReadAllBytes($knownHosts) | Should -Be $keysBefore
        $after = Get-VmState
        $after.Inactive | Should -Be $before.Inactive
        $after.Snapshots | Should -Be $before.Snapshots
        Test-OnOwnDisks linux_vm | Should -BeTrue
    }
}

Describe 'A connection that drops' {
    AfterEach { $null = Start-LabSshd; try { Assert-GuestTicks linux_vm } finally { Reset-LabVmIfNeeded linux_vm } }

    It 'is resumed when the server takes connections again: what reached the server before the cut is not sent again, and the set is Complete' {
        $remote = New-RemoteFolder ssh-cut
        $row = New-FaultRow 'SSH connection dropped mid-copy, the copy resumed' linux_vm
        $writer = $row.Writer
        # 24 MiB of new data on the raw disk: at 4 MiB/s the copy lasts long enough to be cut well inside it.
        $r = Invoke-LabGuestCommand -DomainName linux_vm -Command 'dd if=/dev/urandom of=/mnt/b/wire bs=1M count=24 conv=fsync 2>/dev/null; sync'
        $r.ExitCode | Should -Be 0
        $job = Start-Job -ScriptBlock {
            param($manifest, $remote, $retention, $state)
            $env:ODAKVMBACKUP_STATE_DIR = $state
            Import-Module $manifest
            Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination "odakvm-backup:$remote" -BandwidthLimit 4 |
                Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        } -ArgumentList $ModuleManifest, $remote, (New-TestFolder cut-ret), $env:ODAKVMBACKUP_STATE_DIR
        # The data the server holds in the partial copies (they are sparse: allocated bytes are data written).
        $onServer = { (@(Get-ChildItem -Recurse -Filter '*.partial' -Path $remote -ErrorAction SilentlyContinue) | ForEach-Object { Get-AllocatedBytes $_.FullName } | Measure-Object -Sum).Sum }
        Wait-Until { (& $onServer) -ge 8MB } 'the server holding 8 MiB of the copy' 120
        # What the connections made after the cut carry: the kernel's own count of the bytes each connection to the
        # lab sshd received, printed by ss -E when the connection ends (loopback as a whole also carries other
        # people's traffic on this machine). The connections open at the cut are left out.
        $events = Join-Path (New-TestFolder ssh-cut-ss) 'closed.txt'
        $ss = Start-Process -FilePath stdbuf -ArgumentList '-oL', 'ss', '-E', '-H', '-tin', 'sport', '=', ':2222' -RedirectStandardOutput $events -PassThru
        Start-Sleep -Milliseconds 300   # ss listening
        $heldAtCut = & $onServer
        $openAtCut = @(& ss -Htn state established sport = :2222 | ForEach-Object { ($_.Trim() -split '\s+')[-1] })
        Open-FaultWindow $writer
        (Stop-LabSshSession) | Should -BeGreaterThan 0 -Because 'the copy has connections open'
        $objects = $job | Wait-Job -Timeout 300 | Receive-Job -ErrorVariable jobErrors
        Close-FaultWindow $writer
        Start-Sleep -Milliseconds 500
        & kill -INT $ss.Id
        $ss.WaitForExit(10000) | Out-Null
        $closed = @(Get-Content -LiteralPath $events)
        $afterCut = 0L
        $connections = 0
        for ($i = 0; $i -lt $closed.Count - 1; $i++) {
            if ($closed[$i] -notmatch '127\.0\.0\.1:2222\s+(\S+:\d+)\s*$' -or $Matches[1] -in $openAtCut) { continue }
            if ($closed[$i + 1] -match 'bytes_received:(\d+)') { $afterCut += [long]$Matches[1]; $connections++ }
        }
        $connections | Should -BeGreaterThan 0 -Because 'the copy went on over new connections'
        $jobErrors | Should -BeNullOrEmpty
        @($objects).Count | Should -Be 2
        # A copy started again from zero sends all its data after the cut; a resumed one only what the server did
        # not hold yet (plus the chunks in flight at the cut and ssh's own bytes, which must stay under half of
        # what it held).
        $data = ($objects | Measure-Object -Property CopiedBytes -Sum).Sum
        Add-Content -Path (Join-Path $RepoRoot 'out/ssh-results.txt') -Value ("resume: {0:N0} bytes of data, {1:N0} on the server at the cut, {2:N0} bytes received by the server after it, on {3} new connections" -f $data, $heldAtCut, $afterCut, $connections)
        $heldAtCut | Should -BeLessThan ($data - 4MB) -Because 'the cut must come well before the end of the copy'
        $afterCut | Should -BeLessThan ($data - $heldAtCut / 2) -Because "the server held $heldAtCut of $data bytes at the cut"
        (Get-Manifest (Join-Path $remote "linux_vm/$($objects[0].RunId)")).Status | Should -Be 'Complete'
        foreach ($file in 'linux_boot', 'disco_secundario') {
            (Test-LabImageFileSystem -Path (Join-Path $remote "linux_vm/$($objects[0].RunId)/$file")).Clean | Should -BeTrue
        }
        Test-OnOwnDisks linux_vm | Should -BeTrue
        $null = Assert-GuestWrites $writer
        Complete-FaultRow $row
    }

    It 'puts the VM back when the server stays down, and Repair-KvmBackup marks the set Incomplete once it is back' {
        $remote = New-RemoteFolder ssh-down
        $row = New-FaultRow 'SSH server down mid-copy: VM put back, then Repair-KvmBackup once the server is back' linux_vm
        $writer = $row.Writer
        $job = Start-Job -ScriptBlock {
            param($manifest, $remote, $retention, $state)
            $env:ODAKVMBACKUP_STATE_DIR = $state
            $env:ODAKVMBACKUP_SSH_RECONNECT_SEC = '1,2'   # a server that stays down fails the run in seconds here
            Import-Module $manifest
            Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination "odakvm-backup:$remote" -BandwidthLimit 2 |
                Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        } -ArgumentList $ModuleManifest, $remote, (New-TestFolder down-ret), $env:ODAKVMBACKUP_STATE_DIR
        Wait-Until { Get-ChildItem -Recurse -Filter '*.partial' -Path $remote -ErrorAction SilentlyContinue } 'a copy in progress on the server' 120
        Open-FaultWindow $writer
        Stop-LabSshd
        Wait-Until { $job.ChildJobs[0].Error.Count -gt 0 -or $job.State -ne 'Running' } 'the backup to report the server down' 300
        $toError = $writer.WindowWatch.Elapsed.TotalSeconds
        $objects = $job | Wait-Job -Timeout 300 | Receive-Job -ErrorVariable jobErrors -ErrorAction SilentlyContinue
        @($objects) | Where-Object { $_.SetStatus -ne 'Incomplete' } | Should -BeNullOrEmpty
        ($jobErrors | ForEach-Object { $_.ToString() }) -join "`n" | Should -Match 'odakvm-backup'
        ($jobErrors | ForEach-Object { $_.FullyQualifiedErrorId }) | Should -Contain 'SshConnectionLost,OdaKvmBackup.Commands.CopyVmDiskCommand'
        Test-OnOwnDisks linux_vm | Should -BeTrue -Because 'the VM goes back on its own disks whatever the server does'
        Get-StrayDiskFolderFiles linux_vm | Should -BeNullOrEmpty
        $null = Start-LabSshd
        $actions = Repair-KvmBackup -DomainName linux_vm -Confirm:$false -ErrorVariable repairErrors
        Close-FaultWindow $writer
        $repairErrors | Should -BeNullOrEmpty
        ($actions.Result -join "`n") | Should -Match 'marked Incomplete'
        $manifest = Get-Manifest (Get-ChildItem -Directory (Join-Path $remote 'linux_vm'))[0].FullName
        $manifest.Status | Should -Be 'Incomplete'
        Get-ChildItem -Recurse -Filter '*.partial' -Path $remote | Should -BeNullOrEmpty
        $null = Assert-GuestWrites $writer
        Set-FaultRowError $row ($jobErrors[0].FullyQualifiedErrorId -split ',')[0] $toError 'reconnects after 1 and 2 s (ODAKVMBACKUP_SSH_RECONNECT_SEC=1,2)'
        Complete-FaultRow $row
    }
}
