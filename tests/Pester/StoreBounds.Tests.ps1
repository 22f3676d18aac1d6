# Issue 13, the transport: whatever a backup store does, it cannot hang the host or take it over. A backup server
# whose SFTP service stops answering while its sshd still answers keep-alives ends the backup within the documented
# limits, the VM back on its own disks; small files of a set that are FIFOs, links or too large are refused and the
# other sets still listed; folders under a destination that others can write stop the run before its snapshot;
# a host or user name a shell could act on is refused before ssh runs. Real parts: the lab's libvirt and QEMU, a
# VM of this file's own (lab_bounds), the lab's sshd on 2222 and an sshd of this file's own on another port.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    . (Join-Path $PSScriptRoot 'ForgedSetHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    $script:Vm = 'lab_bounds'
    Initialize-Lab -VmName $Vm
    $null = Start-LabSshd
    $script:Journal = Join-Path $env:ODAKVMBACKUP_STATE_DIR "journal/d-$Vm.json"
    $script:ResultLog = Join-Path $RepoRoot 'out/store-bounds-results.txt'

    function Get-VmState {
        [pscustomobject]@{
            Inactive  = (Invoke-Virsh @('dumpxml', $Vm, '--inactive')).StdOut
            Files     = @((Get-LabDiskMap $Vm).Values | ForEach-Object { Get-ChildItem -LiteralPath (Split-Path $_) -Force } | ForEach-Object FullName | Sort-Object)
            Snapshots = @(Get-SnapshotNames $Vm)
        }
    }

    # The whole pipeline; its errors, and in $script:Ran the verbose lines (the commands that ran).
    function Invoke-BackupPipeline([hashtable] $Copy, [hashtable] $Retain) {
        $errors = @()
        $script:Ran = [System.Collections.Generic.List[string]]::new()
        try {
            $null = Get-VmDisk $Vm -ErrorVariable +errors -ErrorAction SilentlyContinue |
                New-KvmDiskSnapshot -Verbose -ErrorVariable +errors -ErrorAction SilentlyContinue 4>&1 |
                Where-Object { if ($_ -is [System.Management.Automation.VerboseRecord]) { $script:Ran.Add($_.Message); $false } else { $true } } |
                Copy-VmDisk @Copy -Verbose -ErrorVariable +errors -ErrorAction SilentlyContinue 4>&1 |
                Where-Object { if ($_ -is [System.Management.Automation.VerboseRecord]) { $script:Ran.Add($_.Message); $false } else { $true } } |
                Invoke-BlockCommit -ErrorVariable +errors -ErrorAction SilentlyContinue |
                Move-OverlayToRetention @Retain -ErrorVariable +errors -ErrorAction SilentlyContinue
        }
        catch { $errors += $_ }
        @($errors | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
    }

    # Runs a script block in a child pwsh with the module and this run's state folder, and gives up on it after
    # $TimeoutSeconds: a test of "never hangs" must not hang when the code under test does.
    function Invoke-Bounded([scriptblock] $Script, [object[]] $ArgumentList = @(), [hashtable] $Environment = @{}, [int] $TimeoutSeconds = 120) {
        $job = Start-Job -ScriptBlock {
            param($manifest, $state, $environment, $script, $arguments)
            $env:ODAKVMBACKUP_STATE_DIR = $state
            foreach ($name in $environment.Keys) { Set-Item -Path "env:$name" -Value $environment[$name] }
            Import-Module $manifest
            & ([scriptblock]::Create($script)) @arguments
        } -ArgumentList $ModuleManifest, $env:ODAKVMBACKUP_STATE_DIR, $Environment, $Script.ToString(), $ArgumentList
        $finished = $job | Wait-Job -Timeout $TimeoutSeconds
        $output = @($job | Receive-Job -ErrorVariable jobErrors -ErrorAction SilentlyContinue)
        if (-not $finished) { $job | Stop-Job }
        $job | Remove-Job -Force
        [pscustomobject]@{ Finished = [bool]$finished; Output = $output; Errors = @($jobErrors) }
    }

    function Get-ErrorIds($Errors) { @($Errors | Where-Object { $_ } | ForEach-Object { ($_.FullyQualifiedErrorId -split ',')[0] }) }

    # A FIFO a read that hung may still wait on: opening it for reading and writing lets that read go.
    function Undo-Fifo([string] $Root) {
        & find $Root -type p -exec sh -c 'exec 3<>"$1"' sh '{}' ';' 2>$null
    }
}

AfterAll {
    $state = (Invoke-Virsh @('domstate', $Vm) -AllowFailure).StdOut.Trim()
    if ($state -and $state -ne 'shut off') { Invoke-Virsh @('destroy', $Vm) -AllowFailure | Out-Null }
    Invoke-Virsh @('undefine', $Vm, '--snapshots-metadata', '--checkpoints-metadata') -AllowFailure | Out-Null
    foreach ($disk in 'boot', 'data') { Remove-Item -Recurse -Force -ErrorAction SilentlyContinue (Split-Path (Get-LabDiskPath -Name $Vm -Disk $disk)) }
    Remove-Item -Force -ErrorAction SilentlyContinue $Journal
}

Describe 'A backup server whose SFTP service stops answering while its sshd still answers keep-alives' {
    BeforeAll {
        # Wrapper shells of stuck sessions (handed to init once their session ended): found by this test's path, ended
        # with what they started.
        function Stop-StalledSessions {
            foreach ($proc in Get-ChildItem /proc -Directory | Where-Object Name -match '^\d+$') {
                $cmdline = try { [IO.File]::ReadAllText("$($proc.FullName)/cmdline") } catch { '' }
                if ($cmdline.Contains($SshdRoot) -and $cmdline.Contains('stalling-sftp')) {
                    try { [System.Diagnostics.Process]::GetProcessById([int]$proc.Name).Kill($true) } catch [System.ArgumentException] { } catch [System.InvalidOperationException] { }
                }
            }
        }

        # An sshd of this test's own, on a free port: every session of its one key runs a wrapper (command= in
        # authorized_keys) that passes the first 4 MiB a client sends to OpenSSH's sftp-server and then nothing
        # more. That sftp-server answers what it got and waits for the rest, as one blocked on a hung NFS mount
        # does, and sshd goes on answering keep-alives. The first session whose client sends more than that writes
        # the time it stalled into the flag file; from then on every new session stalls at once, before its first
        # answer (the mount stays hung). A session that simply ends sets nothing. Commands other than SFTP run as
        # they would.
        $script:SshdRoot = New-TestFolder bounds-sshd
        & chmod 700 $SshdRoot
        foreach ($key in 'host_key', 'client_key') { & ssh-keygen -q -t ed25519 -N '' -C "odakvm-bounds-$key" -f (Join-Path $SshdRoot $key); if ($LASTEXITCODE) { throw 'ssh-keygen failed' } }
        $script:StallFlag = Join-Path $SshdRoot 'stalled'
        $sftpServer = @('/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server') | Where-Object { Test-Path $_ } | Select-Object -First 1
        if (-not $sftpServer) { throw 'No sftp-server binary: install openssh-server.' }
        $wrapper = Join-Path $SshdRoot 'stalling-sftp.sh'
        Set-Content -LiteralPath $wrapper -Value @"
#!/bin/sh
case "`$SSH_ORIGINAL_COMMAND" in
  internal-sftp|*/sftp-server) ;;
  *) exec /bin/sh -c "`$SSH_ORIGINAL_COMMAND" ;;
esac
# (No exec: these shells keep this script's path in their command line, so AfterAll finds and ends them.)
if [ -e '$StallFlag' ]; then sleep 600; exit 0; fi
{
  # head, unbuffered, passes on each read at once and stops after 4 MiB (dd would count reads, not bytes).
  stdbuf -o0 head -c 4194304
  # One byte more than the limit: a stall (the client goes on sending). End of input: the session just ended.
  if [ "`$(dd bs=1 count=1 2>/dev/null | wc -c)" -eq 1 ]; then
    [ -e '$StallFlag' ] || date +%s.%N > '$StallFlag'
    sleep 600
  fi
} | $sftpServer
"@
        & chmod 700 $wrapper
        $publicKey = ((Get-Content -Raw (Join-Path $SshdRoot 'client_key.pub')).Trim() -split ' ')[0..1] -join ' '
        Set-Content -LiteralPath (Join-Path $SshdRoot 'authorized_keys') -Value "command=`"$wrapper`",no-pty,no-port-forwarding $publicKey"
        $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0); $listener.Start()
        $script:SshdPort = $listener.LocalEndpoint.Port; $listener.Stop()
        Set-Content -LiteralPath (Join-Path $SshdRoot 'sshd_config') -Value @"
Port $SshdPort
ListenAddress 127.0.0.1
HostKey $(Join-Path $SshdRoot 'host_key')
PidFile $(Join-Path $SshdRoot 'sshd.pid')
AuthorizedKeysFile $(Join-Path $SshdRoot 'authorized_keys')
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
"@
        New-Item -ItemType Directory -Force -Path '/run/sshd' | Out-Null
        $script:Sshd = [System.Diagnostics.Process]::Start([System.Diagnostics.ProcessStartInfo]::new('/usr/sbin/sshd', [string[]]@('-D', '-f', (Join-Path $SshdRoot 'sshd_config'), '-E', (Join-Path $SshdRoot 'sshd.log'))))
        Wait-Until { try { $c = [System.Net.Sockets.TcpClient]::new('127.0.0.1', $SshdPort); $c.Dispose(); $true } catch { $false } } "sshd on port $SshdPort" 15
        Set-Content -LiteralPath (Join-Path $SshdRoot 'known_hosts') -Value "[127.0.0.1]:$SshdPort $(((Get-Content -Raw (Join-Path $SshdRoot 'host_key.pub')).Trim() -split ' ')[0..1] -join ' ')"
        # The alias the module reaches it by, at the top of root's ~/.ssh/config, between markers of its own.
        $script:SshConfig = Join-Path ([Environment]::GetFolderPath('UserProfile')) '.ssh/config'
        $script:BlockBegin = '# >>> StoreBounds.Tests.ps1: the stalling test server, removed when the test ends >>>'
        $script:BlockEnd = '# <<< StoreBounds.Tests.ps1 <<<'
        $block = @($BlockBegin, 'Host odakvm-bounds', '  HostName 127.0.0.1', "  Port $SshdPort", '  User root', "  IdentityFile $(Join-Path $SshdRoot 'client_key')",
            '  IdentitiesOnly yes', "  UserKnownHostsFile $(Join-Path $SshdRoot 'known_hosts')", '  GlobalKnownHostsFile /dev/null', 'Host *', $BlockEnd) -join "`n"
        $current = if (Test-Path $SshConfig) { [IO.File]::ReadAllText($SshConfig) } else { '' }
        [IO.File]::WriteAllText($SshConfig, "$block`n$current")
        & ssh -o BatchMode=yes odakvm-bounds true
        if ($LASTEXITCODE) { throw "ssh odakvm-bounds true failed ($LASTEXITCODE): $(Get-Content -Raw (Join-Path $SshdRoot 'sshd.log'))" }
        Remove-Item -Force -ErrorAction SilentlyContinue $StallFlag   # that login was no SFTP session, but be sure
    }

    AfterAll {
        if ($Sshd -and -not $Sshd.HasExited) { $Sshd.Kill($true); $null = $Sshd.WaitForExit(10000) }
        Stop-StalledSessions
        if (Test-Path $SshConfig) {
            $text = [IO.File]::ReadAllText($SshConfig)
            $begin = $text.IndexOf($BlockBegin, [StringComparison]::Ordinal)
            $end = $text.IndexOf($BlockEnd, [StringComparison]::Ordinal)
            if ($begin -ge 0 -and $end -gt $begin) {
                $end += $BlockEnd.Length; if ($end -lt $text.Length -and $text[$end] -eq "`n") { $end++ }
                [IO.File]::WriteAllText($SshConfig, $text.Remove($begin, $end - $begin))
            }
        }
        Reset-LabVmIfNeeded $Vm
    }

    It 'ends the backup within the limits set, with the VM on its own disks and the set marked Incomplete, by the run or (RepairNeeded) by Repair-KvmBackup once the server answers' {
        $r = Invoke-LabGuestCommand -DomainName $Vm -Command 'dd if=/dev/urandom of=/mnt/b/bulk bs=1M count=16 conv=fsync 2>/dev/null; sync'
        $r.ExitCode | Should -Be 0
        $remote = New-TestFolder bounds-remote
        # Small limits, so the test is short: 3 s for a copy's data to stop, 2 reconnections 1 s apart, and 15 s for a
        # request (on this shared lab host, a rename on the server's busy disk took more than 3 s while the VM was
        # committed back: the session that marks the set Incomplete must not be lost to that).
        $limits = @{ ODAKVMBACKUP_SFTP_TIMEOUT_SEC = '15'; ODAKVMBACKUP_SFTP_STALL_SEC = '3'; ODAKVMBACKUP_SSH_RECONNECT_SEC = '1,1' }
        # The documented bound (about_OdaKvmBackup, "Every call is bounded"): once the data stops, the copy fails
        # within the stall limit plus, for each reconnection, its wait and the request limit (plus the moments ssh
        # takes to connect: 8 s are allowed for the two, on this shared 2-core host).
        $bound = 3 + (1 + 15) + (1 + 15)
        $started = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
        # Each output object and each error with the time it came: when the copy failed, not only when all ended.
        $result = Invoke-Bounded -Environment $limits -TimeoutSeconds 240 -ArgumentList $remote, (New-TestFolder bounds-ret), $Vm -Script {
            param($remote, $retention, $vm)
            & { Get-VmDisk $vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination "odakvm-bounds:$remote" | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention } 2>&1 |
                ForEach-Object {
                    $isError = $_ -is [System.Management.Automation.ErrorRecord]
                    [pscustomobject]@{
                        Time      = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
                        ErrorId   = if ($isError) { $_.FullyQualifiedErrorId } else { $null }
                        Message   = if ($isError) { $_.ToString() } else { $null }
                        SetStatus = if (-not $isError -and $_.PSObject.Properties['SetStatus']) { $_.SetStatus } else { $null }
                    }
                }
        }
        $ended = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
        Test-Path $StallFlag | Should -BeTrue -Because 'the server stalled in the middle of the copy'
        $stalled = [long]([double](Get-Content -Raw $StallFlag) * 1000)   # Unix time in ms, as the times below
        $lost = @($result.Output | Where-Object { $_.ErrorId -like 'SshConnectionLost,*' }) | Select-Object -First 1
        $copyEnded = if ($lost) { ($lost.Time - $stalled) / 1000 } else { [double]::NaN }
        $allEnded = ($ended - $stalled) / 1000
        Add-Content -Path $ResultLog -Value ("stalled SFTP server: the copy failed {0:N1} s after the server stopped answering, the backup ended (VM put back) {1:N1} s after it ({2:N1} s in all); limits: request 15 s, stall 3 s, reconnect 1,1 s; documented bound for the copy {3} s" -f $copyEnded, $allEnded, (($ended - $started) / 1000), $bound)
        $result.Finished | Should -BeTrue -Because 'a server that stops answering must not hold the backup (and the VM on its overlays) for good'
        $lost | Should -Not -BeNullOrEmpty -Because "the copy fails as a lost connection (errors: $(($result.Output | Where-Object ErrorId | ForEach-Object ErrorId) -join ', ') $($result.Errors -join ' / '))"
        $copyEnded | Should -BeLessOrEqual ($bound + 8)
        # The rollback (commits, the set marked Incomplete) has its own limits; here it takes seconds.
        $allEnded | Should -BeLessOrEqual ($bound + 60)
        $lost.Message | Should -Match 'odakvm-bounds'
        $lost.Message | Should -Match 'acknowledged|answered none|did not answer'
        @($result.Output | Where-Object { $_.SetStatus -eq 'Complete' }) | Should -BeNullOrEmpty
        Test-OnOwnDisks $Vm | Should -BeTrue -Because 'the VM goes back on its own disks whatever the server does'
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
        Get-SnapshotNames $Vm | Should -BeNullOrEmpty
        # New sessions stall too, but the store's first session, opened before the stall, may still answer: the set is
        # then marked Incomplete at once. If that session was lost as well, the set cannot be marked now: the run must
        # say so (RepairNeeded, naming the way out) and keep its journal, and Repair-KvmBackup marks the set once the
        # server answers again.
        $repairNeeded = @($result.Output | Where-Object { $_.ErrorId -like 'RepairNeeded,*' }) | Select-Object -First 1
        if ($repairNeeded) {
            $repairNeeded.Message | Should -Match "Repair-KvmBackup -DomainName $Vm"
            Test-Path $Journal | Should -BeTrue -Because 'the set still to be marked is Repair-KvmBackup''s to finish'
            Remove-Item -Force $StallFlag
            Stop-StalledSessions
            $repair = Invoke-Bounded -Environment $limits -TimeoutSeconds 120 -ArgumentList $Vm -Script {
                param($vm)
                Repair-KvmBackup -DomainName $vm -Confirm:$false 2>&1 | ForEach-Object { if ($_ -is [System.Management.Automation.ErrorRecord]) { "ERROR $($_.FullyQualifiedErrorId): $_" } }
            }
            $repair.Finished | Should -BeTrue
            @($repair.Output) -join ' / ' | Should -BeNullOrEmpty
        }
        Add-Content -Path $ResultLog -Value ("stalled SFTP server: the set was marked {0}" -f $(if ($repairNeeded) { 'by Repair-KvmBackup once the server answered (the run said RepairNeeded)' } else { 'by the run itself, over its first session' }))
        $left = if (Test-Path $Journal) { Get-Content -Raw $Journal } else { '' }
        $left | Should -BeNullOrEmpty -Because "once the set is marked, nothing is left for Repair-KvmBackup (errors: $(($result.Output | Where-Object ErrorId | ForEach-Object Message) -join ' / '))"
        $sets = @(Get-ChildItem -Directory (Join-Path $remote $Vm))
        $sets.Count | Should -Be 1
        foreach ($set in $sets) {
            (Get-Content -Raw (Join-Path $set.FullName 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Incomplete'
        }
    }
}

Describe 'Small files of a set: regular files of bounded size, or the set is reported unreadable' {
    BeforeAll {
        $script:Local = New-TestFolder bounds-sets
        $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $Local | Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder bounds-sets-ret)
        $script:RealRunId = $objects[0].RunId
        $script:RealSet = Join-Path $Local "$Vm/$RealRunId"
        $script:Outside = New-TestFolder bounds-outside

        # Forged beside the real set, in a store root: a FIFO named backup.json, a backup.json of 65 MiB (valid JSON:
        # the manifest, then spaces), and a backup.json that is a link to a manifest outside the store.
        function New-BadSets([string] $Root) {
            $fifo = New-ForgedSet -From $RealSet -Destination $Root -RunId '20200101-000001'
            Remove-Item -LiteralPath (Join-Path $fifo 'backup.json'); & mkfifo (Join-Path $fifo 'backup.json')
            $large = New-ForgedSet -From $RealSet -Destination $Root -RunId '20200101-000002'
            $stream = [IO.File]::Open((Join-Path $large 'backup.json'), 'Append')
            try { $spaces = [byte[]]::new(1MB); [Array]::Fill($spaces, [byte]32); for ($i = 0; $i -lt 65; $i++) { $stream.Write($spaces, 0, $spaces.Length) } } finally { $stream.Dispose() }
            $linked = New-ForgedSet -From $RealSet -Destination $Root -RunId '20200101-000003'
            $target = Join-Path $Outside "manifest-$([guid]::NewGuid().ToString('N')).json"
            Move-Item -LiteralPath (Join-Path $linked 'backup.json') -Destination $target
            $null = New-Item -ItemType SymbolicLink -Path (Join-Path $linked 'backup.json') -Target $target
        }

        function Assert-ListedDespiteBadSets($Result, [string] $Where) {
            $Result.Finished | Should -BeTrue -Because "Get-KvmBackup of $Where must not hang on a FIFO"
            $listing = $Result.Output | Where-Object { $_.PSObject.Properties.Name -contains 'Seconds' } | Select-Object -First 1
            Add-Content -Path $ResultLog -Value ("Get-KvmBackup of {0} with a FIFO, a 65 MiB and a linked backup.json beside a good set: {1:N2} s" -f $Where, $listing.Seconds)
            $listing.Seconds | Should -BeLessThan 10
            @($listing.RunIds) | Should -Be @($RealRunId)
            (Get-ErrorIds $Result.Errors) | Should -Be @('BackupSetUnreadable', 'BackupSetUnreadable', 'BackupSetUnreadable')
            $text = ($Result.Errors | ForEach-Object { $_.ToString() }) -join "`n"
            $text | Should -Match '20200101-000001.*FIFO'
            $text | Should -Match '20200101-000002.*64 MiB'
            $text | Should -Match '20200101-000003.*symbolic link'
        }

        $script:ListScript = {
            param($path, $vm)
            $clock = [Diagnostics.Stopwatch]::StartNew()
            $sets = @(Get-KvmBackup -Path $path -DomainName $vm)
            [pscustomobject]@{ Seconds = $clock.Elapsed.TotalSeconds; RunIds = @($sets | ForEach-Object RunId) }
        }
    }

    It 'lists the good set of a local store at once and reports each bad one with its reason' {
        New-BadSets $Local
        try {
            $result = Invoke-Bounded -Script $ListScript -ArgumentList $Local, $Vm -TimeoutSeconds 60
            Assert-ListedDespiteBadSets $result 'a local store'
        }
        finally { Undo-Fifo $Local }
    }

    It 'lists the good set of an SSH store at once and reports each bad one with its reason' {
        $remote = New-TestFolder bounds-sets-ssh
        $null = New-ForgedSet -From $RealSet -Destination $remote
        New-BadSets $remote
        try {
            $result = Invoke-Bounded -Script $ListScript -ArgumentList "odakvm-backup:$remote", $Vm -TimeoutSeconds 60
            Assert-ListedDespiteBadSets $result 'an SSH store'
        }
        finally { Undo-Fifo $remote }   # an sftp session that opened the FIFO is let go
    }
}

Describe 'Folders under a destination that others could write' {
    BeforeAll {
        Reset-LabVmIfNeeded $Vm
        function Assert-RefusedBeforeSnapshot($Errors, $Before, [string] $Folder, [string] $Owner, [string] $Mode) {
            Add-Content -Path $ResultLog -Value ("{0} owned by {1}, mode {2}: {3}" -f $Folder, $Owner, $Mode, (($Errors | ForEach-Object { "$($_.FullyQualifiedErrorId): $_" }) -join ' / '))
            (Get-ErrorIds $Errors) -join ', ' | Should -Match 'UnsafeDestinationFolder'
            $mine = @($Errors | Where-Object { $_ -and $_.FullyQualifiedErrorId -like 'UnsafeDestinationFolder,*' }) | Select-Object -First 1
            $mine.ToString() | Should -Match ([regex]::Escape($Folder))
            $mine.ToString() | Should -Match "uid $Owner"
            $mine.ToString() | Should -Match "mode $Mode"
            $mine.ToString() | Should -Match 'chown .*chmod 700'
            @($Ran | Where-Object { $_ -like 'Running: virsh snapshot-create-as*' }) | Should -BeNullOrEmpty
            $after = Get-VmState
            $after.Inactive | Should -Be $Before.Inactive
            $after.Files | Should -Be $Before.Files
            $after.Snapshots | Should -Be $Before.Snapshots
            Test-OnOwnDisks $Vm | Should -BeTrue
            Test-Path $Journal | Should -BeFalse
            # Nothing was changed: the folder is as it was.
            (& stat -c '%u %a' $Folder) | Should -Be "$Owner $($Mode.TrimStart('0'))"
        }
    }

    It 'refuses a <Case>, before any snapshot, changing nothing' -ForEach @(
        @{ Case = 'local <domain> folder writable by everyone'; Owner = '0'; Mode = '0777'; Where = 'local' }
        @{ Case = 'local <domain> folder writable by its group'; Owner = '0'; Mode = '0770'; Where = 'local' }
        @{ Case = 'local <domain> folder of another user'; Owner = '65534'; Mode = '0700'; Where = 'local' }
        @{ Case = 'retention <domain> folder writable by its group'; Owner = '0'; Mode = '0775'; Where = 'retention' }
        @{ Case = '<domain> folder on the SSH server writable by everyone'; Owner = '0'; Mode = '0777'; Where = 'ssh' }
    ) {
        $destination = New-TestFolder bounds-owner
        $retention = New-TestFolder bounds-owner-ret
        $folder = Join-Path $(if ($Where -eq 'retention') { $retention } else { $destination }) $Vm
        New-Item -ItemType Directory -Path $folder | Out-Null
        & chown $Owner $folder; & chmod $Mode $folder
        $before = Get-VmState
        $target = if ($Where -eq 'ssh') { "odakvm-backup:$destination" } else { $destination }
        $errs = Invoke-BackupPipeline -Copy @{ Destination = $target } -Retain @{ Path = $retention }
        Assert-RefusedBeforeSnapshot $errs $before $folder $Owner $Mode
    }
}

Describe 'SSH host and user names a shell could act on' {
    It 'refuses <Destination> before ssh ever runs, naming the character' -ForEach @(
        @{ Destination = 'a$(touch${IFS}odakvm-pwned)b:/backup'; Bad = '$' }
        @{ Destination = 'a;touch${IFS}odakvm-pwned;b:/backup'; Bad = ';' }
        @{ Destination = 'a|touch${IFS}odakvm-pwned:/backup'; Bad = '|' }
        @{ Destination = 'a`touch${IFS}odakvm-pwned`b:/backup'; Bad = '`' }
        @{ Destination = 'r$(touch${IFS}odakvm-pwned)t@odakvm-backup:/backup'; Bad = '$' }
    ) {
        $cwd = New-TestFolder bounds-names
        Push-Location $cwd
        try {
            $before = Get-VmState
            $errs = Invoke-BackupPipeline -Copy @{ Destination = $Destination } -Retain @{ Path = (New-TestFolder bounds-names-ret) }
            $listed = @(Get-KvmBackup -Path $Destination -Verbose -ErrorVariable listErrors -ErrorAction SilentlyContinue 4>&1)
        }
        finally { Pop-Location }
        Add-Content -Path $ResultLog -Value ("{0}: {1}" -f $Destination, (($errs | ForEach-Object { "$($_.FullyQualifiedErrorId): $_" }) -join ' / '))
        (Get-ErrorIds $errs) -join ', ' | Should -Match 'InvalidSshDestination'
        (@($errs | Where-Object { $_ -and $_.FullyQualifiedErrorId -like 'InvalidSshDestination,*' }) | Select-Object -First 1).ToString() | Should -Match ([regex]::Escape("'$Bad'"))
        (Get-ErrorIds $listErrors) | Should -Be @('InvalidSshDestination')
        @($Ran) + @($listed | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object Message) |
            Where-Object { $_ -match '^(Running|Starting): ssh ' } | Should -BeNullOrEmpty -Because 'ssh never runs with such a name'
        @($Ran | Where-Object { $_ -like 'Running: virsh snapshot-create-as*' }) | Should -BeNullOrEmpty
        Test-Path (Join-Path $cwd 'odakvm-pwned') | Should -BeFalse
        (Get-VmState).Inactive | Should -Be $before.Inactive
        Test-OnOwnDisks $Vm | Should -BeTrue
    }
}
