# OdaKvmLab.psm1 -- real libvirt + QEMU (TCG) lab for the OdaKvmBackup tests.
#
# Debian 12, root, no systemd. Monolithic libvirtd started by hand (no virtqemud in bookworm),
# tiny direct-kernel-boot guests (Debian cloud kernel + busybox + qemu-guest-agent initramfs) whose
# disks mimic Oracle Database Appliance ACFS paths. Everything lives under Get-LabRoot
# ($env:ODAKVM_LAB, default /var/tmp/odakvmlab) except what libvirt needs system-wide:
# /etc/libvirt/qemu.conf, the libvirt-qemu user, /run/libvirt, /var/{lib,cache,log}/libvirt.
#
#   Import-Module ./tests/Lab/OdaKvmLab.psm1; Initialize-Lab            # linux_vm up, agent ready
#   Reset-LabVm -Name lab_noagent -NoAgent; Remove-Lab
#   Get-LabXfsFolder local                                             # a folder on an XFS with reflink (loop device)
#
# Guest: see tests/Lab/guest/init. Lab domains are named linux_vm* or lab_* (Remove-Lab relies on it).

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:Uri = 'qemu:///system'
$script:Packages = @('libvirt-daemon', 'libvirt-daemon-driver-qemu', 'libvirt-clients', 'qemu-system-x86', 'qemu-utils', 'cpio', 'e2fsprogs', 'strace', 'xfsprogs', 'rsync')
$script:GuestModules = @('virtio_ring', 'virtio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'virtio_blk', 'virtio_console')
$script:GuestBuildFormat = 'odakvmlab-guest-v1'
$script:QemuConfPath = '/etc/libvirt/qemu.conf'
$script:QemuConfMarker = '# managed by OdaKvmLab (tests/Lab/OdaKvmLab.psm1)'
$script:AgentChannel = 'org.qemu.guest_agent.0'
$script:DiskSizeBytes = 64MB
# nodiscard: mke2fs would punch holes into the preallocated raw file.
# no lazy init: otherwise the guest's ext4lazyinit zeroes the inode tables with WRITE ZEROES (unmap),
# which punches holes into the raw file through QEMU a few seconds after boot.
$script:Mkfs = 'nodiscard,lazy_itable_init=0,lazy_journal_init=0'
$script:AptUpdated = $false
$script:GuestSourceDir = Join-Path $PSScriptRoot 'guest'
# The XFS with reflink (see Mount-LabXfs): a sparse image, so only what is written takes space on the host; mounted
# with discard, so what is deleted in it is given back.
$script:XfsImageBytes = 40GB

# ------------------------------------------------------------------ private helpers

function Write-LabTiming([string]$What, [System.Diagnostics.Stopwatch]$Watch, [string]$Extra = '') {
    $line = '[lab] {0,-34} {1,6:N1}s' -f $What, $Watch.Elapsed.TotalSeconds
    if ($Extra) { $line += "  $Extra" }
    Write-Host $line
}

function Format-LabCommand([string]$FilePath, [string[]]$ArgumentList) {
    $parts = @($FilePath) + @($ArgumentList | ForEach-Object { if ($_ -match '[\s''"]' -or $_ -eq '') { "'" + ($_ -replace "'", "'\''") + "'" } else { $_ } })
    $parts -join ' '
}

# Runs a native command (no shell), LC_ALL=C, stdin closed; returns ExitCode/StdOut/StdErr.
# Throws with the command line, exit code and stderr unless the exit code is in -OkExitCode or -AllowFailure.
function Invoke-LabNative {
    param(
        [Parameter(Mandatory)][string]$FilePath,
        [string[]]$ArgumentList = @(),
        [int[]]$OkExitCode = @(0),
        [switch]$AllowFailure,
        [int]$TimeoutSeconds = 600,
        [string]$WorkingDirectory
    )
    $psi = [System.Diagnostics.ProcessStartInfo]::new($FilePath)
    foreach ($a in $ArgumentList) { $psi.ArgumentList.Add([string]$a) }
    $psi.UseShellExecute = $false
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    if ($WorkingDirectory) { $psi.WorkingDirectory = $WorkingDirectory }
    $psi.Environment['LC_ALL'] = 'C'
    $psi.Environment['LANG'] = 'C'
    $psi.Environment['LIBVIRT_DEFAULT_URI'] = $script:Uri
    $psi.Environment['DEBIAN_FRONTEND'] = 'noninteractive'
    $path = [string]$psi.Environment['PATH']
    foreach ($d in '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin') {
        if ((":${path}:") -notlike "*:${d}:*") { $path = if ($path) { "${path}:$d" } else { $d } }
    }
    $psi.Environment['PATH'] = $path
    $cmd = Format-LabCommand $FilePath $ArgumentList
    try { $p = [System.Diagnostics.Process]::Start($psi) }
    catch { throw "command '$cmd' could not be started: $($_.Exception.Message)" }
    try {
        $p.StandardInput.Close()
        $outTask = $p.StandardOutput.ReadToEndAsync()
        $errTask = $p.StandardError.ReadToEndAsync()
        if (-not $p.WaitForExit($TimeoutSeconds * 1000)) {
            try { $p.Kill($true) } catch { }
            throw "command '$cmd' timed out after $TimeoutSeconds s"
        }
        $p.WaitForExit()
        $r = [pscustomobject]@{
            Command  = $cmd
            ExitCode = $p.ExitCode
            StdOut   = $outTask.GetAwaiter().GetResult()
            StdErr   = $errTask.GetAwaiter().GetResult()
        }
    }
    finally { $p.Dispose() }
    if (-not $AllowFailure -and $OkExitCode -notcontains $r.ExitCode) {
        $err = $r.StdErr.Trim()
        if (-not $err) { $err = $r.StdOut.Trim() }
        if ($err.Length -gt 4000) { $err = '...' + $err.Substring($err.Length - 4000) }
        throw "command '$cmd' failed with exit code $($r.ExitCode): $err"
    }
    $r
}

function Invoke-LabShell([string]$Script, [string[]]$Arguments = @(), [int]$TimeoutSeconds = 600) {
    Invoke-LabNative -FilePath '/bin/bash' -ArgumentList (@('-o', 'pipefail', '-c', $Script, 'lab-sh') + $Arguments) -TimeoutSeconds $TimeoutSeconds
}

function Get-LabDir([string]$Sub) {
    $d = Join-Path (Get-LabRoot) $Sub
    if (-not (Test-Path -LiteralPath $d)) { $null = New-Item -ItemType Directory -Path $d -Force }
    $d
}

function Set-LabExecutable([string]$Path) {
    [System.IO.File]::SetUnixFileMode($Path, [System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute, GroupRead, GroupExecute, OtherRead, OtherExecute')
}

function Write-LabFileIfChanged([string]$Path, [string]$Content) {
    if ((Test-Path -LiteralPath $Path) -and ([System.IO.File]::ReadAllText($Path) -ceq $Content)) { return $false }
    $dir = Split-Path -Parent $Path
    if (-not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir -Force }
    [System.IO.File]::WriteAllText($Path, $Content)
    $true
}

function Get-LabFileTail([string]$Path, [int]$Lines = 30) {
    if (-not (Test-Path -LiteralPath $Path)) { return "<$Path does not exist>" }
    $t = @(Get-Content -LiteralPath $Path -Tail $Lines -ErrorAction SilentlyContinue)
    "--- last $Lines lines of ${Path}:`n" + ($t -join "`n")
}

# true when /proc/<pid> is a live (non-zombie) process whose comm is $Comm
function Test-LabProcess([int]$ProcessId, [string]$Comm) {
    if ($ProcessId -le 1) { return $false }
    try {
        $c = [System.IO.File]::ReadAllText("/proc/$ProcessId/comm").Trim()
        $stat = [System.IO.File]::ReadAllText("/proc/$ProcessId/stat")
    }
    catch { return $false }
    $state = $stat.Substring($stat.LastIndexOf(')') + 2, 1)
    ($c -eq $Comm) -and ($state -ne 'Z') -and ($state -ne 'X')
}

function Send-LabSignal([int]$ProcessId, [ValidateSet('TERM', 'KILL')][string]$Signal) {
    $null = Invoke-LabNative -FilePath '/bin/sh' -ArgumentList @('-c', 'kill -s "$1" "$2"', 'sh', $Signal, "$ProcessId") -AllowFailure
}

# SIGTERM, wait, then SIGKILL; returns $true if the process is gone
function Stop-LabProcess([int]$ProcessId, [string]$Comm, [int]$GraceSeconds = 10) {
    if (-not (Test-LabProcess $ProcessId $Comm)) { return $true }
    Send-LabSignal $ProcessId TERM
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    while ((Test-LabProcess $ProcessId $Comm) -and $sw.Elapsed.TotalSeconds -lt $GraceSeconds) { Start-Sleep -Milliseconds 100 }
    if (Test-LabProcess $ProcessId $Comm) {
        Write-Warning "$Comm $ProcessId still alive $GraceSeconds s after SIGTERM: SIGKILL"
        Send-LabSignal $ProcessId KILL
        $sw.Restart()
        while ((Test-LabProcess $ProcessId $Comm) -and $sw.Elapsed.TotalSeconds -lt 5) { Start-Sleep -Milliseconds 100 }
    }
    -not (Test-LabProcess $ProcessId $Comm)
}

function Get-LabDaemonPidFile { Join-Path (Get-LabRoot) 'run/libvirtd.pid' }

function Get-LabDaemonPid {
    $f = Get-LabDaemonPidFile
    if (-not (Test-Path -LiteralPath $f)) { return $null }
    $raw = ([System.IO.File]::ReadAllText($f)).Trim()
    $daemonPid = 0
    if ([int]::TryParse($raw, [ref]$daemonPid) -and (Test-LabProcess $daemonPid 'libvirtd')) { return $daemonPid }
    $null
}

function Get-LabQemuConfContent {
    @"
$script:QemuConfMarker
# The privileged QEMU driver reads its config only from here. QEMU runs as root without DAC/AppArmor
# relabelling, its stdout/stderr go straight to /var/log/libvirt/qemu/<dom>.log (no virtlogd), no cgroups.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]

"@ -replace "`r`n", "`n"
}

function Get-LabDomainName {
    $r = Invoke-LabVirsh -ArgumentList @('list', '--all', '--name')
    @($r.StdOut -split "`n" | ForEach-Object { $_.Trim() } | Where-Object { $_ })
}

function Test-LabDomainName([string]$Name) { $Name -like 'linux_vm*' -or $Name -like 'lab_*' }

function Get-LabDomainState([string]$Name) {
    $r = Invoke-LabVirsh -ArgumentList @('domstate', $Name) -AllowFailure
    if ($r.ExitCode -ne 0) { return $null }
    ($r.StdOut -split "`n")[0].Trim()
}

# the guest's serial console, written by QEMU: the guest writer's reports (tests/Pester/ProofHelpers.ps1) are read from it
function Get-LabConsoleLogPath([string]$Name) { Join-Path (Get-LabRoot) "log/$Name-console.log" }

function Get-LabAgentChannelState([string]$DomainName) {
    [xml]$x = (Invoke-LabVirsh -ArgumentList @('dumpxml', $DomainName)).StdOut
    $t = $x.SelectSingleNode("/domain/devices/channel/target[@name='$script:AgentChannel']")
    if ($null -eq $t) { return $null }
    $t.GetAttribute('state')
}

function Invoke-LabAgentJson([string]$DomainName, [hashtable]$Command, [int]$TimeoutSeconds = 10) {
    $json = $Command | ConvertTo-Json -Compress -Depth 10
    $r = Invoke-LabVirsh -ArgumentList @('qemu-agent-command', $DomainName, '--timeout', "$TimeoutSeconds", $json)
    $o = $r.StdOut | ConvertFrom-Json
    $o.return
}

function Get-LabProperty($Object, [string]$Name) {
    if ($null -eq $Object) { return $null }
    $p = $Object.PSObject.Properties[$Name]
    if ($p) { $p.Value } else { $null }
}

function Get-LabGuestKernelPackage {
    $resolve = {
        $r = Invoke-LabNative -FilePath 'apt-cache' -ArgumentList @('depends', 'linux-image-cloud-amd64') -AllowFailure
        if ($r.ExitCode -eq 0 -and $r.StdOut -match 'Depends:\s+(linux-image-\S+-cloud-amd64)\b') { return $Matches[1] }
        $null
    }
    $k = & $resolve
    if (-not $k -and -not $script:AptUpdated) { Update-LabAptIndex; $k = & $resolve }
    if (-not $k) {
        # offline fallback: a kernel already in the .deb cache
        $cached = @(Get-ChildItem -LiteralPath (Get-LabDir 'debs') -Filter 'linux-image-*-cloud-amd64_*.deb' | Sort-Object LastWriteTime -Descending)
        if ($cached.Count -gt 0) { return ($cached[0].Name -split '_')[0] }
        throw "cannot resolve the cloud kernel package: 'apt-cache depends linux-image-cloud-amd64' names no linux-image-*-cloud-amd64"
    }
    $k
}

function Update-LabAptIndex {
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $null = Invoke-LabNative -FilePath 'apt-get' -ArgumentList @('update') -TimeoutSeconds 300
    $script:AptUpdated = $true
    Write-LabTiming 'apt-get update' $sw
}

function Get-LabCachedDeb([string]$Package) {
    $debs = Get-LabDir 'debs'
    $f = @(Get-ChildItem -LiteralPath $debs -Filter "${Package}_*.deb" | Sort-Object LastWriteTime -Descending)
    if ($f.Count -gt 0) { return $f[0].FullName }
    $r = Invoke-LabNative -FilePath 'apt-get' -ArgumentList @('download', $Package) -WorkingDirectory $debs -AllowFailure -TimeoutSeconds 600
    if ($r.ExitCode -ne 0 -and -not $script:AptUpdated) {
        Update-LabAptIndex
        $r = Invoke-LabNative -FilePath 'apt-get' -ArgumentList @('download', $Package) -WorkingDirectory $debs -AllowFailure -TimeoutSeconds 600
    }
    if ($r.ExitCode -ne 0) { throw "command '$($r.Command)' failed with exit code $($r.ExitCode): $($r.StdErr.Trim())" }
    $f = @(Get-ChildItem -LiteralPath $debs -Filter "${Package}_*.deb" | Sort-Object LastWriteTime -Descending)
    if ($f.Count -eq 0) { throw "apt-get download $Package succeeded but no ${Package}_*.deb is in $debs" }
    $f[0].FullName
}

function Get-LabGuestScript([string]$Name) {
    $p = Join-Path $script:GuestSourceDir $Name
    if (-not (Test-Path -LiteralPath $p)) { throw "guest script $p is missing" }
    ([System.IO.File]::ReadAllText($p)) -replace "`r`n", "`n"
}

function New-LabExt4Qcow2([string]$Path, [string]$Label) {
    $tmp = "$Path.tmpraw"
    try {
        $fs = [System.IO.File]::Create($tmp)
        try { $fs.SetLength($script:DiskSizeBytes) } finally { $fs.Dispose() }
        $null = Invoke-LabNative -FilePath 'mkfs.ext4' -ArgumentList @('-q', '-F', '-E', $script:Mkfs, '-L', $Label, $tmp)
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('convert', '-q', '-f', 'raw', '-O', 'qcow2', $tmp, $Path)
    }
    finally { Remove-Item -LiteralPath $tmp -Force -ErrorAction SilentlyContinue }
}

function New-LabExt4RawFull([string]$Path, [string]$Label) {
    $r = Invoke-LabNative -FilePath 'fallocate' -ArgumentList @('-l', "$script:DiskSizeBytes", $Path) -AllowFailure
    if ($r.ExitCode -ne 0) {
        Remove-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('create', '-q', '-f', 'raw', '-o', 'preallocation=full', $Path, "$script:DiskSizeBytes")
    }
    # see $script:Mkfs: no discard, no lazy init, so the file stays fully allocated
    $null = Invoke-LabNative -FilePath 'mkfs.ext4' -ArgumentList @('-q', '-F', '-E', $script:Mkfs, '-L', $Label, $Path)
    $alloc = Get-LabAllocatedBytes $Path
    if ($alloc -lt $script:DiskSizeBytes) { throw "raw disk $Path is not fully allocated: $alloc of $script:DiskSizeBytes bytes" }
}

function Get-LabAllocatedBytes([string]$Path) {
    $s = (Invoke-LabNative -FilePath 'stat' -ArgumentList @('-c', '%b %B', $Path)).StdOut.Trim() -split '\s+'
    [long]$s[0] * [long]$s[1]
}

# Disks of a realistic size for the benchmark, made once and copied for each reset: a qcow2 boot disk of 4 GiB
# holding 1 GiB of random data, and a fully allocated 2 GiB raw vdisk, a quarter random data and the rest zeros.
# Both are ext4 (files written with debugfs), so the guest mounts them and writes to them as usual.
function Get-LabBenchTemplate {
    $dir = Get-LabDir 'bench-templates'
    $boot = Join-Path $dir 'boot.qcow2'
    $data = Join-Path $dir 'data.raw'
    if ((Test-Path -LiteralPath $boot) -and (Test-Path -LiteralPath $data)) { return [pscustomobject]@{ Boot = $boot; Data = $data } }
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $random = Join-Path $dir 'random.bin'
    $raw = Join-Path $dir 'boot.raw'
    try {
        $null = Invoke-LabNative -FilePath 'truncate' -ArgumentList @('-s', '4G', $raw)
        $null = Invoke-LabNative -FilePath 'mkfs.ext4' -ArgumentList @('-q', '-F', '-E', $script:Mkfs, '-L', 'lab_boot', $raw)
        $null = Invoke-LabNative -FilePath 'dd' -ArgumentList @('if=/dev/urandom', "of=$random", 'bs=1M', 'count=1024', 'status=none')
        $null = Invoke-LabNative -FilePath 'debugfs' -ArgumentList @('-w', '-R', "write $random data.bin", $raw)
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('convert', '-q', '-f', 'raw', '-O', 'qcow2', $raw, "$boot.tmp")
        Remove-Item -LiteralPath $raw
        $null = Invoke-LabNative -FilePath 'fallocate' -ArgumentList @('-l', '2G', "$data.tmp")
        $null = Invoke-LabNative -FilePath 'mkfs.ext4' -ArgumentList @('-q', '-F', '-E', $script:Mkfs, '-L', 'lab_data', "$data.tmp")
        $null = Invoke-LabNative -FilePath 'truncate' -ArgumentList @('-s', '512M', $random)
        $null = Invoke-LabNative -FilePath 'debugfs' -ArgumentList @('-w', '-R', "write $random data.bin", "$data.tmp")
        Move-Item -LiteralPath "$boot.tmp" -Destination $boot
        Move-Item -LiteralPath "$data.tmp" -Destination $data
    }
    finally { Remove-Item -LiteralPath $random, $raw, "$boot.tmp", "$data.tmp" -Force -ErrorAction SilentlyContinue }
    Write-LabTiming 'bench disk templates' $sw
    [pscustomobject]@{ Boot = $boot; Data = $data }
}

# Disks of any size for the incremental benchmark (tools/Measure-Incremental.ps1), made in place: a qcow2 boot disk of
# BootGiB and a fully allocated raw vdisk of VdiskGiB, each an ext4 whose /data.bin holds DataFraction of the disk in
# random data (written with debugfs, so the guest reads and rewrites it as /mnt/a/data.bin and /mnt/b/data.bin).
# No template: at 16 GiB a template and its copy would take the host's space twice.
function New-LabSizedBenchDisk([string]$Boot, [string]$Data, [double]$BootGiB, [double]$VdiskGiB, [double]$DataFraction) {
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $random = "$Data.random"
    $raw = "$Boot.tmpraw"
    $sizes = @{ Boot = [long]($BootGiB * 1GB); Vdisk = [long]($VdiskGiB * 1GB) }
    # data.bin in whole MiB (dd writes it so), a whole number of 8 KiB blocks for the guest's scattered writes
    $fill = { param([long]$Disk) [long][math]::Floor($Disk * $DataFraction / 1MB) }
    try {
        $null = Invoke-LabNative -FilePath 'truncate' -ArgumentList @('-s', "$($sizes.Boot)", $raw)
        $null = Invoke-LabNative -FilePath 'mkfs.ext4' -ArgumentList @('-q', '-F', '-E', $script:Mkfs, '-L', 'lab_boot', $raw)
        $null = Invoke-LabNative -FilePath 'dd' -ArgumentList @('if=/dev/urandom', "of=$random", 'bs=1M', "count=$(& $fill $sizes.Boot)", 'status=none') -TimeoutSeconds 3600
        $null = Invoke-LabNative -FilePath 'debugfs' -ArgumentList @('-w', '-R', "write $random data.bin", $raw) -TimeoutSeconds 3600
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('convert', '-q', '-f', 'raw', '-O', 'qcow2', $raw, $Boot) -TimeoutSeconds 3600
        Remove-Item -LiteralPath $raw
        $r = Invoke-LabNative -FilePath 'fallocate' -ArgumentList @('-l', "$($sizes.Vdisk)", $Data) -AllowFailure
        if ($r.ExitCode -ne 0) { throw "fallocate -l $($sizes.Vdisk) $Data failed: $($r.StdErr.Trim())" }
        $null = Invoke-LabNative -FilePath 'mkfs.ext4' -ArgumentList @('-q', '-F', '-E', $script:Mkfs, '-L', 'lab_data', $Data)
        $null = Invoke-LabNative -FilePath 'dd' -ArgumentList @('if=/dev/urandom', "of=$random", 'bs=1M', "count=$(& $fill $sizes.Vdisk)", 'status=none') -TimeoutSeconds 3600
        $null = Invoke-LabNative -FilePath 'debugfs' -ArgumentList @('-w', '-R', "write $random data.bin", $Data) -TimeoutSeconds 3600
    }
    finally { Remove-Item -LiteralPath $random, $raw -Force -ErrorAction SilentlyContinue }
    $alloc = Get-LabAllocatedBytes $Data
    if ($alloc -lt $sizes.Vdisk) { throw "raw disk $Data is not fully allocated: $alloc of $($sizes.Vdisk) bytes" }
    Write-LabTiming 'sized bench disks' $sw ('boot {0} GiB qcow2, vdisk {1} GiB raw, {2:P0} data' -f $BootGiB, $VdiskGiB, $DataFraction)
}

function Get-LabDomainXml([string]$Name, [string]$Cmdline, [switch]$Shareable) {
    $e = { param($s) [System.Security.SecurityElement]::Escape($s) }
    $guest = Join-Path (Get-LabRoot) 'guest'
    @"
<domain type='qemu'>
  <name>$(& $e $Name)</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$(& $e "$guest/vmlinuz")</kernel>
    <initrd>$(& $e "$guest/initrd.img")</initrd>
    <cmdline>$(& $e $Cmdline)</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$(& $e (Get-LabDiskPath -Name $Name -Disk boot))'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$(& $e (Get-LabDiskPath -Name $Name -Disk data))'/>
      <target dev='vdb' bus='virtio'/>$(if ($Shareable) { "`n      <shareable/>" })
    </disk>
    <serial type='file'>
      <source path='$(& $e (Get-LabConsoleLogPath $Name))'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='$script:AgentChannel'/>
    </channel>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>

"@ -replace "`r`n", "`n"
}

function Remove-LabDomain([string]$Name) {
    $state = Get-LabDomainState $Name
    if ($null -eq $state) { return }
    if ($state -ne 'shut off') {
        $r = Invoke-LabVirsh -ArgumentList @('destroy', $Name) -AllowFailure
        if ($r.ExitCode -ne 0 -and $r.StdErr -notmatch 'not running') { throw "command '$($r.Command)' failed with exit code $($r.ExitCode): $($r.StdErr.Trim())" }
    }
    if ($null -ne (Get-LabDomainState $Name)) {
        $null = Invoke-LabVirsh -ArgumentList @('undefine', $Name, '--snapshots-metadata', '--checkpoints-metadata')
    }
}

# fresh disks + define + start, no agent wait; returns the seconds spent
function Reset-LabVmCore([string]$Name, [switch]$NoAgent, [switch]$NoStart, [string]$Layout = 'Oda', [double[]]$BenchSize = @(4, 16, 0.25)) {
    if ($Name -notmatch '^[A-Za-z0-9_][A-Za-z0-9_.-]*$') { throw "invalid lab VM name '$Name'" }
    if (-not (Test-LabDomainName $Name)) { Write-Warning "'$Name' is not named linux_vm* or lab_*: Remove-Lab will not clean it up" }
    $guest = Join-Path (Get-LabRoot) 'guest'
    foreach ($f in 'vmlinuz', 'initrd.img') {
        if (-not (Test-Path -LiteralPath (Join-Path $guest $f))) { throw "$guest/$f is missing: run Build-LabGuest (or Initialize-Lab) first" }
    }
    Start-LabDaemon
    Remove-LabDomain $Name
    foreach ($d in 'boot', 'data') {
        $old = Split-Path -Parent (Get-LabDiskPath -Name $Name -Disk $d)
        if (Test-Path -LiteralPath $old) { Remove-Item -LiteralPath $old -Recurse -Force }
    }
    [System.IO.File]::WriteAllText((Join-Path (Get-LabDir 'etc') "$Name.layout"), "$Layout`n")
    $boot = Get-LabDiskPath -Name $Name -Disk boot
    $data = Get-LabDiskPath -Name $Name -Disk data
    foreach ($p in $boot, $data) {
        $dir = Split-Path -Parent $p
        if (Test-Path -LiteralPath $dir) { Remove-Item -LiteralPath $dir -Recurse -Force }
        $null = New-Item -ItemType Directory -Path $dir -Force
    }
    if ($Layout -eq 'Bench') {
        $templates = Get-LabBenchTemplate
        $null = Invoke-LabNative -FilePath 'cp' -ArgumentList @('--sparse=auto', $templates.Boot, $boot)
        $null = Invoke-LabNative -FilePath 'cp' -ArgumentList @('--sparse=never', $templates.Data, $data)
    }
    elseif ($Layout -eq 'BenchSized') {
        New-LabSizedBenchDisk -Boot $boot -Data $data -BootGiB $BenchSize[0] -VdiskGiB $BenchSize[1] -DataFraction $BenchSize[2]
    }
    else {
        New-LabExt4Qcow2 -Path $boot -Label 'lab_boot'
        New-LabExt4RawFull -Path $data -Label 'lab_data'
    }
    $cmdline = 'console=ttyS0 quiet'
    if ($NoAgent) { $cmdline += ' lab.noqga' }
    $xmlPath = Join-Path (Get-LabDir 'etc') "$Name.xml"
    [System.IO.File]::WriteAllText($xmlPath, (Get-LabDomainXml -Name $Name -Cmdline $cmdline -Shareable:($Layout -eq 'Shareable')))
    $null = Get-LabDir 'log'
    [System.IO.File]::WriteAllText((Get-LabConsoleLogPath $Name), '')
    $null = Invoke-LabVirsh -ArgumentList @('define', $xmlPath)
    if (-not $NoStart) { $null = Invoke-LabVirsh -ArgumentList @('start', $Name) }
}

# ------------------------------------------------------------------ public functions

# The lab's XFS: the image, its mount point, and what is mounted there now (findmnt: source and type, or $null).
function Get-LabXfsImage { Join-Path (Get-LabRoot) 'xfs.img' }
function Get-LabXfsMountPoint { Join-Path (Get-LabRoot) 'xfs' }
function Get-LabXfsMounted {
    $r = Invoke-LabNative -FilePath 'findmnt' -ArgumentList @('--noheadings', '--output', 'SOURCE,FSTYPE', '--mountpoint', (Get-LabXfsMountPoint)) -AllowFailure
    if ($r.ExitCode -ne 0 -or -not $r.StdOut.Trim()) { return $null }
    $source, $type = $r.StdOut.Trim() -split '\s+'
    [pscustomobject]@{ Source = $source; Type = $type }
}

# The loop devices the image is attached to (losetup -j prints "/dev/loopN: [dev]:inode (path)" per device).
function Get-LabXfsLoopDevice {
    $image = Get-LabXfsImage
    if (-not (Test-Path -LiteralPath $image)) { return }
    $r = Invoke-LabNative -FilePath 'losetup' -ArgumentList @('--associated', $image)
    foreach ($line in ($r.StdOut -split "`n" | Where-Object { $_ })) { ($line -split ':')[0] }
}

<#
.SYNOPSIS
Returns the lab root directory ($env:ODAKVM_LAB, default /var/tmp/odakvmlab).
#>
function Get-LabRoot {
    [CmdletBinding()]
    [OutputType([string])]
    param()
    $r = $env:ODAKVM_LAB
    if ([string]::IsNullOrWhiteSpace($r)) { $r = '/var/tmp/odakvmlab' }
    [System.IO.Path]::GetFullPath($r).TrimEnd('/')
}

<#
.SYNOPSIS
Returns the ODA-like path of a lab VM's boot (qcow2, no extension) or data (raw) disk.
#>
function Get-LabDiskPath {
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)][string]$Name,
        [Parameter(Mandatory)][ValidateSet('boot', 'data')][string]$Disk
    )
    $root = Get-LabRoot
    switch (Get-LabVmLayout $Name) {
        # plain KVM hosts often keep one folder per pool: the same file name in two folders
        'SameFileName' { if ($Disk -eq 'boot') { Join-Path $root "pool1/$Name/disk" } else { Join-Path $root "pool2/$Name/disk" } }
        default {
            $snaps = Join-Path $root 'sharedrepo/vmstore/.ACFS/snaps'
            if ($Disk -eq 'boot') { Join-Path $snaps "vm_$Name/linux_boot" }
            else { Join-Path $snaps "vdisk_disco_secundario_$Name/disco_secundario" }
        }
    }
}

<#
.SYNOPSIS
Returns how a lab VM's disks are laid out: Oda (ODA's ACFS paths, the default), SameFileName (two disks named
'disk' in two folders), Shareable (ODA paths, the data disk marked <shareable/> as ODA's shared vdisks are) or
Bench (ODA paths, disks of a realistic size: see Get-LabBenchTemplate) or BenchSized (ODA paths, disks of the size
Reset-LabVm -BenchSize gives: see New-LabSizedBenchDisk).
#>
function Get-LabVmLayout {
    [CmdletBinding()]
    [OutputType([string])]
    param([Parameter(Mandatory)][string]$Name)
    $f = Join-Path (Get-LabRoot) "etc/$Name.layout"
    if (Test-Path -LiteralPath $f) { ([System.IO.File]::ReadAllText($f)).Trim() } else { 'Oda' }
}

<#
.SYNOPSIS
Runs virsh -c qemu:///system with LC_ALL=C; returns ExitCode/StdOut/StdErr, throws on failure unless -AllowFailure.
#>
function Invoke-LabVirsh {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory, Position = 0)][string[]]$ArgumentList,
        [switch]$AllowFailure,
        [int]$TimeoutSeconds = 300
    )
    Invoke-LabNative -FilePath 'virsh' -ArgumentList (@('-c', $script:Uri) + $ArgumentList) -AllowFailure:$AllowFailure -TimeoutSeconds $TimeoutSeconds
}

<#
.SYNOPSIS
Installs the lab's Debian packages when missing (apt-get update once, install --no-install-recommends).
#>
function Install-LabPrerequisite {
    [CmdletBinding()]
    param()
    $missing = @(foreach ($p in $script:Packages) {
            $r = Invoke-LabNative -FilePath 'dpkg-query' -ArgumentList @('-W', '-f=${Status}', $p) -AllowFailure
            if ($r.ExitCode -ne 0 -or $r.StdOut -notmatch 'ok installed') { $p }
        })
    if ($missing.Count -eq 0) { return }
    if (-not $script:AptUpdated) { Update-LabAptIndex }
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $r = Invoke-LabNative -FilePath 'apt-get' -ArgumentList (@('install', '-y', '--no-install-recommends') + $missing) -TimeoutSeconds 1200
    $null = Get-LabDir 'log'
    [System.IO.File]::AppendAllText((Join-Path (Get-LabRoot) 'log/apt.log'), $r.StdOut + $r.StdErr)
    Write-LabTiming "apt-get install ($($missing.Count) missing)" $sw ($missing -join ' ')
}

<#
.SYNOPSIS
Starts the lab's libvirtd (no systemd) if it is not running and waits until qemu:///system answers.
#>
function Start-LabDaemon {
    [CmdletBinding()]
    param()
    $etc = Get-LabDir 'etc'; $log = Get-LabDir 'log'; $null = Get-LabDir 'run'
    # libvirtd resolves its compiled-in default user 'libvirt-qemu' before reading qemu.conf and dies without it
    if ((Invoke-LabNative -FilePath 'getent' -ArgumentList @('group', 'libvirt-qemu') -AllowFailure).ExitCode -ne 0) {
        $null = Invoke-LabNative -FilePath 'groupadd' -ArgumentList @('--system', 'libvirt-qemu')
    }
    if ((Invoke-LabNative -FilePath 'getent' -ArgumentList @('passwd', 'libvirt-qemu') -AllowFailure).ExitCode -ne 0) {
        $null = Invoke-LabNative -FilePath 'useradd' -ArgumentList @('--system', '-g', 'libvirt-qemu', '-d', '/var/lib/libvirt', '-M', '-s', '/usr/sbin/nologin', 'libvirt-qemu')
    }
    if ((Test-Path -LiteralPath $script:QemuConfPath) -and -not ((Get-Content -LiteralPath $script:QemuConfPath -Raw) -like "*$script:QemuConfMarker*")) {
        $orig = "$script:QemuConfPath.odakvmlab-orig"
        if (-not (Test-Path -LiteralPath $orig)) { Copy-Item -LiteralPath $script:QemuConfPath -Destination $orig }
    }
    $changed = Write-LabFileIfChanged $script:QemuConfPath (Get-LabQemuConfContent)
    $conf = Join-Path $etc 'libvirtd.conf'
    $changed = (Write-LabFileIfChanged $conf (@"
# OdaKvmLab: libvirtd -d -f $conf -p $(Get-LabDaemonPidFile)
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$log/libvirtd.log"

"@ -replace "`r`n", "`n")) -or $changed
    $daemonPid = Get-LabDaemonPid
    if ($daemonPid -and $changed) {
        Write-Host "[lab] libvirt configuration changed: restarting libvirtd $daemonPid"
        Stop-LabDaemon
        $daemonPid = $null
    }
    if ($daemonPid) {
        $r = Invoke-LabVirsh -ArgumentList @('version') -AllowFailure -TimeoutSeconds 120
        if ($r.ExitCode -eq 0) { return }
        Write-Warning "libvirtd $daemonPid runs but does not answer ($($r.StdErr.Trim())): restarting it"
        Stop-LabDaemon
    }
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $pidFile = Get-LabDaemonPidFile
    $daemonLog = Join-Path $log 'libvirtd.stdio.log'
    # through bash so the daemon's stdio is a file, never this process's pipes, and it inherits no other descriptor:
    # run under 'flock <lab lock> ...', this process has the lock's descriptor open, and a daemon that kept it would
    # hold the lab lock for as long as it runs
    $null = Invoke-LabNative -FilePath '/bin/bash' -ArgumentList @('-c', 'for f in /proc/$$/fd/*; do n=${f##*/}; if [ "$n" -gt 2 ]; then eval "exec $n<&-"; fi; done 2>/dev/null; exec libvirtd -d -f "$1" -p "$2" </dev/null >>"$3" 2>&1', 'lab-sh', $conf, $pidFile, $daemonLog) -TimeoutSeconds 60
    while ($sw.Elapsed.TotalSeconds -lt 15) {
        if ((Get-LabDaemonPid) -and (Test-Path -LiteralPath '/run/libvirt/libvirt-sock')) { break }
        Start-Sleep -Milliseconds 50
    }
    $daemonPid = Get-LabDaemonPid
    if (-not $daemonPid -or -not (Test-Path -LiteralPath '/run/libvirt/libvirt-sock')) {
        throw "libvirtd did not come up (pid file $pidFile, socket /run/libvirt/libvirt-sock)`n$(Get-LabFileTail $daemonLog 10)`n$(Get-LabFileTail "$log/libvirtd.log" 20)"
    }
    Write-LabTiming "libvirtd started (pid $daemonPid)" $sw
    $sw.Restart()
    $r = Invoke-LabVirsh -ArgumentList @('version') -AllowFailure -TimeoutSeconds 120   # first call probes QEMU capabilities (~8 s)
    if ($r.ExitCode -ne 0 -or -not (Get-LabDaemonPid)) {
        throw "libvirtd $daemonPid does not answer: '$($r.Command)' exit code $($r.ExitCode): $($r.StdErr.Trim())`n$(Get-LabFileTail "$log/libvirtd.log" 20)"
    }
    Write-LabTiming 'first virsh version' $sw
}

<#
.SYNOPSIS
Stops the lab's libvirtd by its pid file (SIGTERM, SIGKILL after 10 s); running domains keep running.
#>
function Stop-LabDaemon {
    [CmdletBinding()]
    param()
    $daemonPid = Get-LabDaemonPid
    if (-not $daemonPid) { return }
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    if (-not (Stop-LabProcess -ProcessId $daemonPid -Comm 'libvirtd' -GraceSeconds 10)) { throw "libvirtd $daemonPid survived SIGTERM and SIGKILL" }
    Write-LabTiming "libvirtd $daemonPid stopped" $sw
}

<#
.SYNOPSIS
Restarts the lab's libvirtd (SIGTERM by pid, wait for exit, start again); running domains survive.
#>
function Restart-LabDaemon {
    [CmdletBinding()]
    param()
    Stop-LabDaemon
    Start-LabDaemon
}

<#
.SYNOPSIS
Builds (or reuses from cache) the guest kernel and busybox + qemu-ga initramfs under <lab>/guest.
#>
function Build-LabGuest {
    [CmdletBinding()]
    param([switch]$Force)
    $guest = Get-LabDir 'guest'
    $vmlinuz = Join-Path $guest 'vmlinuz'
    $initrd = Join-Path $guest 'initrd.img'
    $hashFile = Join-Path $guest 'build.sha256'
    $init = Get-LabGuestScript 'init'
    $shutdown = Get-LabGuestScript 'shutdown'
    $hook = Get-LabGuestScript 'fsfreeze-hook'

    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $kpkg = Get-LabGuestKernelPackage
    $debs = @((Get-LabCachedDeb $kpkg), (Get-LabCachedDeb 'qemu-guest-agent'), (Get-LabCachedDeb 'busybox-static'))
    $key = @($script:GuestBuildFormat, ($script:GuestModules -join ' '), $init, $shutdown, $hook) + @($debs | ForEach-Object { Split-Path -Leaf $_ })
    $sha = [System.Security.Cryptography.SHA256]::HashData([System.Text.Encoding]::UTF8.GetBytes($key -join "`n"))
    $hash = [System.Convert]::ToHexString($sha)
    if (-not $Force -and (Test-Path -LiteralPath $vmlinuz) -and (Test-Path -LiteralPath $initrd) -and
        (Test-Path -LiteralPath $hashFile) -and ([System.IO.File]::ReadAllText($hashFile).Trim() -eq $hash)) {
        Write-LabTiming 'guest build (cached)' $sw
        return
    }
    Write-LabTiming 'guest debs' $sw (($debs | ForEach-Object { Split-Path -Leaf $_ }) -join ' ')
    $sw.Restart()

    $x = Join-Path $guest 'x'; $root = Join-Path $guest 'root'
    foreach ($d in $x, $root) { if (Test-Path -LiteralPath $d) { Remove-Item -LiteralPath $d -Recurse -Force } }
    $null = New-Item -ItemType Directory -Path $x
    foreach ($deb in $debs) { $null = Invoke-LabNative -FilePath 'dpkg-deb' -ArgumentList @('-x', $deb, $x) }
    $kvs = @(Get-ChildItem -LiteralPath (Join-Path $x 'lib/modules') -Directory)
    if ($kvs.Count -ne 1) { throw "expected one kernel in $kpkg, found: $($kvs.Name -join ', ')" }
    $kv = $kvs[0].Name

    foreach ($d in 'bin', 'sbin', 'usr/sbin', 'etc', 'etc/qemu', 'proc', 'sys', 'dev', 'run', 'tmp', 'mnt/a', 'mnt/b', 'lib/modules') {
        $null = New-Item -ItemType Directory -Path (Join-Path $root $d) -Force
    }
    Copy-Item -LiteralPath (Join-Path $x 'bin/busybox') -Destination (Join-Path $root 'bin/busybox')
    Copy-Item -LiteralPath (Join-Path $x 'usr/sbin/qemu-ga') -Destination (Join-Path $root 'usr/sbin/qemu-ga')
    $ko = @{}
    foreach ($f in Get-ChildItem -LiteralPath $kvs[0].FullName -Recurse -File -Filter '*.ko') { $ko[$f.BaseName] = $f.FullName }
    foreach ($m in $script:GuestModules) {
        if (-not $ko.ContainsKey($m)) { throw "kernel module $m.ko not found in $kpkg ($kv)" }
        Copy-Item -LiteralPath $ko[$m] -Destination (Join-Path $root "lib/modules/$m.ko")
    }
    [System.IO.File]::WriteAllText((Join-Path $root 'etc/modules.load'), ($script:GuestModules -join ' ') + "`n")

    # qemu-ga's shared libraries, taken from the host (same distribution)
    $ldd = (Invoke-LabNative -FilePath 'ldd' -ArgumentList @((Join-Path $root 'usr/sbin/qemu-ga'))).StdOut
    if ($ldd -match 'not found') { throw "qemu-ga has unresolved libraries on this host:`n$ldd" }
    foreach ($line in $ldd -split "`n") {
        $lib = $null
        if ($line -match '=>\s+(/\S+)') { $lib = $Matches[1] } elseif ($line -match '^\s*(/\S+)\s+\(') { $lib = $Matches[1] }
        if (-not $lib) { continue }
        $dest = Join-Path $root $lib.TrimStart('/')
        $null = New-Item -ItemType Directory -Path (Split-Path -Parent $dest) -Force
        [System.IO.File]::Copy($lib, $dest, $true)   # follows symlinks
        Set-LabExecutable $dest
    }
    [System.IO.File]::WriteAllText((Join-Path $root 'init'), $init)
    [System.IO.File]::WriteAllText((Join-Path $root 'sbin/shutdown'), $shutdown)
    [System.IO.File]::WriteAllText((Join-Path $root 'etc/qemu/fsfreeze-hook'), $hook)
    foreach ($f in 'init', 'sbin/shutdown', 'etc/qemu/fsfreeze-hook', 'bin/busybox', 'usr/sbin/qemu-ga') { Set-LabExecutable (Join-Path $root $f) }

    $tmp = "$initrd.tmp"
    $null = Invoke-LabShell 'cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"' @($root, $tmp)
    Copy-Item -LiteralPath (Join-Path $x "boot/vmlinuz-$kv") -Destination "$vmlinuz.tmp" -Force
    Move-Item -LiteralPath "$vmlinuz.tmp" -Destination $vmlinuz -Force
    Move-Item -LiteralPath $tmp -Destination $initrd -Force
    [System.IO.File]::WriteAllText((Join-Path $guest 'kver'), "$kv`n")
    [System.IO.File]::WriteAllText($hashFile, "$hash`n")
    Remove-Item -LiteralPath $x, $root -Recurse -Force
    Write-LabTiming 'guest initramfs built' $sw ('kernel {0}, vmlinuz {1:N1} MiB, initrd {2:N1} MiB' -f $kv, ((Get-Item $vmlinuz).Length / 1MB), ((Get-Item $initrd).Length / 1MB))
}

<#
.SYNOPSIS
Polls guest-ping until the domain's agent answers; returns the seconds waited, throws with the console tail on timeout.
#>
function Wait-LabGuestAgent {
    [CmdletBinding()]
    [OutputType([double])]
    param(
        [Parameter(Mandatory)][string]$DomainName,
        [int]$TimeoutSeconds = 120
    )
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $last = ''
    while ($true) {
        $r = Invoke-LabVirsh -ArgumentList @('qemu-agent-command', $DomainName, '--timeout', '5', '{"execute":"guest-ping"}') -AllowFailure
        if ($r.ExitCode -eq 0) { return [math]::Round($sw.Elapsed.TotalSeconds, 2) }
        $last = $r.StdErr.Trim()
        if ($last -match 'domain is not running|failed to get domain|Domain not found') {
            throw "guest agent of '$DomainName' cannot answer: $last`n$(Get-LabFileTail (Get-LabConsoleLogPath $DomainName))"
        }
        if ($sw.Elapsed.TotalSeconds -ge $TimeoutSeconds) {
            throw "guest agent of '$DomainName' did not answer guest-ping within $TimeoutSeconds s (last error: $last)`n$(Get-LabFileTail (Get-LabConsoleLogPath $DomainName))"
        }
        Start-Sleep -Milliseconds 250
    }
}

<#
.SYNOPSIS
Runs /bin/sh -c <Command> in the guest via guest-exec; returns ExitCode, StdOut and StdErr.
#>
function Invoke-LabGuestCommand {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$DomainName,
        [Parameter(Mandatory)][string]$Command,
        [int]$TimeoutSeconds = 60
    )
    $ret = Invoke-LabAgentJson $DomainName @{ execute = 'guest-exec'; arguments = @{ path = '/bin/sh'; arg = @('-c', $Command); 'capture-output' = $true } }
    $execPid = [int](Get-LabProperty $ret 'pid')
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    while ($true) {
        $st = Invoke-LabAgentJson $DomainName @{ execute = 'guest-exec-status'; arguments = @{ pid = $execPid } }
        if (Get-LabProperty $st 'exited') { break }
        if ($sw.Elapsed.TotalSeconds -ge $TimeoutSeconds) { throw "guest command on '$DomainName' did not finish within $TimeoutSeconds s: $Command" }
        Start-Sleep -Milliseconds 100
    }
    $decode = { param($b) if ($b) { [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($b)) } else { '' } }
    $code = Get-LabProperty $st 'exitcode'
    if ($null -eq $code) { $sig = Get-LabProperty $st 'signal'; $code = if ($null -ne $sig) { 128 + [int]$sig } else { -1 } }
    [pscustomobject]@{
        ExitCode = [int]$code
        StdOut   = & $decode (Get-LabProperty $st 'out-data')
        StdErr   = & $decode (Get-LabProperty $st 'err-data')
    }
}

<#
.SYNOPSIS
Takes the guest agent down for -Seconds (qemu-ga killed, restarted by the guest) and waits until libvirt sees it disconnected.
#>
function Stop-LabGuestAgent {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$DomainName,
        [Parameter(Mandatory)][ValidateRange(0, 86400)][int]$Seconds,
        [int]$TimeoutSeconds = 20
    )
    # no capture-output and a detached kill: guest-exec returns before qemu-ga dies
    $cmd = "echo $Seconds > /run/qga.hold && (sleep 0.3; killall qemu-ga) </dev/null >/dev/null 2>&1 &"
    $null = Invoke-LabAgentJson $DomainName @{ execute = 'guest-exec'; arguments = @{ path = '/bin/sh'; arg = @('-c', $cmd) } }
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    while ($true) {
        if ((Get-LabAgentChannelState $DomainName) -eq 'disconnected') { return }
        $r = Invoke-LabVirsh -ArgumentList @('qemu-agent-command', $DomainName, '--timeout', '2', '{"execute":"guest-ping"}') -AllowFailure
        if ($r.ExitCode -ne 0) { return }
        if ($sw.Elapsed.TotalSeconds -ge $TimeoutSeconds) { throw "guest agent of '$DomainName' still connected $TimeoutSeconds s after it was told to stop" }
        Start-Sleep -Milliseconds 100
    }
}

<#
.SYNOPSIS
Recreates a lab VM from scratch: destroy/undefine, fresh ODA-like disks, define, start, wait for the agent.
#>
function Reset-LabVm {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$Name,
        [switch]$NoAgent,
        [switch]$NoStart,
        [ValidateSet('Oda', 'SameFileName', 'Shareable', 'Bench', 'BenchSized')][string]$Layout = 'Oda',
        # BenchSized only: boot disk GiB (qcow2), vdisk GiB (raw, fully allocated), fraction of each holding data
        [ValidateCount(3, 3)][double[]]$BenchSize = @(4, 16, 0.25)
    )
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    Reset-LabVmCore -Name $Name -NoAgent:$NoAgent -NoStart:$NoStart -Layout $Layout -BenchSize $BenchSize
    if ($NoStart) { Write-LabTiming "$Name defined (not started)" $sw; return }
    if ($NoAgent) { Write-LabTiming "$Name started (no agent)" $sw; return }
    $t0 = $sw.Elapsed.TotalSeconds
    $waited = Wait-LabGuestAgent -DomainName $Name
    Write-LabTiming "$Name ready" $sw ('disks+define+start {0:N1}s, agent after {1:N1}s' -f $t0, $waited)
}

<#
.SYNOPSIS
Mounts the lab's XFS with reflink (idempotent) and returns its mount point.
.DESCRIPTION
A sparse image <lab root>/xfs.img made with 'mkfs.xfs -m reflink=1' (xfsprogs from apt), attached to a loop device
and mounted (with discard) on <lab root>/xfs: a destination whose file system clones files, as XFS backup servers and
NFS 4.2 shares on XFS do. Mounted already: nothing is done. Attached but not mounted (a mount that failed): that
device is mounted. Nothing attached (after a reboot): the image is attached again, never made again. Throws, saying
why and what to do, when there is no free loop device, the mount fails, or the file system has no reflink.
Remove-Lab (Dismount-LabXfs) tears it down.
#>
function Mount-LabXfs {
    [CmdletBinding()]
    [OutputType([string])]
    param()
    $mountPoint = Get-LabXfsMountPoint
    $mounted = Get-LabXfsMounted
    if ($mounted) {
        if ($mounted.Type -ne 'xfs') { throw "$mountPoint has a $($mounted.Type) file system mounted ($($mounted.Source)), not the lab's XFS: unmount it first." }
        return $mountPoint
    }
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    Install-LabPrerequisite
    $image = Get-LabXfsImage
    if (-not (Test-Path -LiteralPath $image)) {
        $null = New-Item -ItemType Directory -Force -Path (Get-LabRoot)
        $temp = "$image.tmp"
        $null = Invoke-LabNative -FilePath 'truncate' -ArgumentList @('--size', "$script:XfsImageBytes", $temp)
        $null = Invoke-LabNative -FilePath 'mkfs.xfs' -ArgumentList @('-q', '-f', '-m', 'reflink=1', '-L', 'odakvmlab', $temp)
        Move-Item -LiteralPath $temp -Destination $image
    }
    $device = @(Get-LabXfsLoopDevice) | Select-Object -First 1
    if (-not $device) {
        $free = Invoke-LabNative -FilePath 'losetup' -ArgumentList @('--find') -AllowFailure
        if ($free.ExitCode -ne 0) {
            throw ("The lab's XFS needs a loop device and none is free: 'losetup --find' says '$($free.StdErr.Trim())'. " +
                "See 'losetup --list'; detach one nothing uses (losetup --detach /dev/loopN), or allow more (modprobe loop max_loop=16; " +
                'in a container, give it /dev/loop-control and loop devices).')
        }
        $device = (Invoke-LabNative -FilePath 'losetup' -ArgumentList @('--find', '--show', $image)).StdOut.Trim()
    }
    if (-not (Test-Path -LiteralPath $mountPoint)) { $null = New-Item -ItemType Directory -Path $mountPoint }
    $r = Invoke-LabNative -FilePath 'mount' -ArgumentList @('-t', 'xfs', '-o', 'discard', $device, $mountPoint) -AllowFailure
    if ($r.ExitCode -ne 0) {
        $null = Invoke-LabNative -FilePath 'losetup' -ArgumentList @('--detach', $device) -AllowFailure
        throw "Mounting the lab's XFS ($image on $device) at $mountPoint failed: $($r.StdErr.Trim()). Run Dismount-LabXfs to start it afresh."
    }
    [System.IO.File]::SetUnixFileMode($mountPoint, [System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    $info = (Invoke-LabNative -FilePath 'xfs_info' -ArgumentList @($mountPoint)).StdOut
    if ($info -notmatch 'reflink=1') { throw "The lab's XFS at $mountPoint has no reflink (xfs_info: $($info.Trim())): run Dismount-LabXfs, which removes its image, and mount it again." }
    Write-LabTiming 'Mount-LabXfs' $sw "($image on $device, xfs with reflink)"
    $mountPoint
}

<#
.SYNOPSIS
Returns a folder (0700) on the lab's XFS with reflink, mounting it if needed: 'local' for a local destination,
'ssh' for the SSH server (Get-LabSshXfsFolder), or any other name.
#>
function Get-LabXfsFolder {
    [CmdletBinding()]
    [OutputType([string])]
    param([ValidatePattern('^[A-Za-z0-9_.-]+$')][string]$Name = 'local')
    $folder = Join-Path (Mount-LabXfs) $Name
    if (-not (Test-Path -LiteralPath $folder)) {
        $null = New-Item -ItemType Directory -Path $folder
        [System.IO.File]::SetUnixFileMode($folder, [System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    }
    $folder
}

<#
.SYNOPSIS
Unmounts the lab's XFS, detaches its loop device and removes its image (nothing mounted: only what is left is removed).
Throws, leaving everything in place, when the file system is busy.
#>
function Dismount-LabXfs {
    [CmdletBinding()]
    param()
    $mountPoint = Get-LabXfsMountPoint
    $mounted = Get-LabXfsMounted
    if ($mounted) {
        if ($mounted.Type -ne 'xfs') { throw "$mountPoint has a $($mounted.Type) file system mounted ($($mounted.Source)), not the lab's XFS: left alone." }
        $r = Invoke-LabNative -FilePath 'umount' -ArgumentList @($mountPoint) -AllowFailure
        if ($r.ExitCode -ne 0) {
            throw "Unmounting the lab's XFS at $mountPoint failed: $($r.StdErr.Trim()). Something still uses it (fuser -vm $mountPoint); stop it and run Remove-Lab again."
        }
    }
    foreach ($device in @(Get-LabXfsLoopDevice)) { $null = Invoke-LabNative -FilePath 'losetup' -ArgumentList @('--detach', $device) }
    foreach ($path in (Get-LabXfsImage), "$(Get-LabXfsImage).tmp") { Remove-Item -LiteralPath $path -Force -ErrorAction SilentlyContinue }
    # Not recursive: what is under the mount point now is not on the XFS (it is unmounted); Remove-Lab removes it.
    if ((Test-Path -LiteralPath $mountPoint) -and -not (Get-ChildItem -LiteralPath $mountPoint -Force)) { [System.IO.Directory]::Delete($mountPoint) }
}

<#
.SYNOPSIS
Brings the whole lab up from nothing (packages, libvirtd, guest image, VMs with agent ready); idempotent.
#>
function Initialize-Lab {
    [CmdletBinding()]
    param([string[]]$VmName = @('linux_vm'))
    $total = [System.Diagnostics.Stopwatch]::StartNew()
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    Install-LabPrerequisite
    Write-LabTiming 'phase prerequisites' $sw
    $sw.Restart(); Start-LabDaemon; Write-LabTiming 'phase daemon' $sw
    $sw.Restart(); Build-LabGuest; Write-LabTiming 'phase guest' $sw
    # start all VMs first, then wait for each agent: the boots overlap
    $sw.Restart()
    foreach ($n in $VmName) { Reset-LabVmCore -Name $n }
    Write-LabTiming "phase VMs started ($($VmName -join ', '))" $sw
    foreach ($n in $VmName) {
        $w = Wait-LabGuestAgent -DomainName $n
        Write-LabTiming "$n agent ready" $sw ('guest-ping ok {0:N1}s after the wait began' -f $w)
    }
    Write-LabTiming 'Initialize-Lab total' $total
}

<#
.SYNOPSIS
Tears the lab down: lab domains, libvirtd, leftover qemu, libvirt state, the XFS (Dismount-LabXfs) and lab dirs (keeps packages and the .deb cache).
#>
function Remove-Lab {
    [CmdletBinding()]
    param()
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    $root = Get-LabRoot
    if (Get-LabDaemonPid) {
        foreach ($d in (Get-LabDomainName | Where-Object { Test-LabDomainName $_ })) {
            $null = Invoke-LabVirsh -ArgumentList @('destroy', $d) -AllowFailure
            $r = Invoke-LabVirsh -ArgumentList @('undefine', $d, '--snapshots-metadata', '--checkpoints-metadata') -AllowFailure
            if ($r.ExitCode -ne 0 -and $null -ne (Get-LabDomainState $d)) { Write-Warning "undefine $d failed: $($r.StdErr.Trim())" }
        }
        Stop-LabDaemon
    }
    # qemu processes still alive (e.g. the daemon had been killed hard), by libvirt's pid files
    if (Test-Path -LiteralPath '/run/libvirt/qemu') {
        foreach ($f in Get-ChildItem -LiteralPath '/run/libvirt/qemu' -Filter '*.pid' -File) {
            if (-not (Test-LabDomainName $f.BaseName)) { continue }
            $qpid = 0
            if ([int]::TryParse(([System.IO.File]::ReadAllText($f.FullName)).Trim(), [ref]$qpid) -and (Test-LabProcess $qpid 'qemu-system-x86')) {
                if (Stop-LabProcess -ProcessId $qpid -Comm 'qemu-system-x86' -GraceSeconds 10) { Write-Host "[lab] killed leftover qemu $qpid ($($f.BaseName))" }
                else { Write-Warning "qemu $qpid ($($f.BaseName)) survived SIGKILL" }
            }
        }
    }
    # Before anything under the root is deleted: a recursive delete would go into the mounted XFS.
    Dismount-LabXfs
    foreach ($d in '/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt', '/var/log/libvirt', '/etc/libvirt/qemu') {
        if (Test-Path -LiteralPath $d) { Remove-Item -LiteralPath $d -Recurse -Force }
    }
    if (Test-Path -LiteralPath $root) {
        Get-ChildItem -LiteralPath $root -Force | Where-Object { $_.Name -ne 'debs' } | Remove-Item -Recurse -Force
    }
    Write-LabTiming 'Remove-Lab' $sw "(kept: packages, $root/debs, $script:QemuConfPath, user libvirt-qemu)"
}

<#
.SYNOPSIS
Returns the text of a file inside an ext4 image (qcow2/raw/overlay chain, in use or not), journal replayed on a temp copy.
#>
function Get-LabImageFile {
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)][string]$Path,
        [Parameter(Mandatory)][string]$GuestPath
    )
    if (-not (Test-Path -LiteralPath $Path)) { throw "image $Path does not exist" }
    $tmp = Join-Path (Get-LabDir 'run') "img-$([guid]::NewGuid().ToString('N')).raw"
    try {
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('convert', '-U', '-O', 'raw', $Path, $tmp)
        # replay the ext4 journal as a mount would (metadata of a live or crash-consistent image may still be there)
        $null = Invoke-LabNative -FilePath 'e2fsck' -ArgumentList @('-E', 'journal_only', '-y', $tmp) -OkExitCode 0, 1
        $r = Invoke-LabNative -FilePath 'debugfs' -ArgumentList @('-R', "cat $GuestPath", $tmp)
        $err = ($r.StdErr -split "`n" | Where-Object { $_ -and $_ -notmatch '^debugfs \d' }) -join "`n"
        if ($err) { throw "debugfs cat $GuestPath in $Path failed: $err" }
        $r.StdOut
    }
    finally { Remove-Item -LiteralPath $tmp -Force -ErrorAction SilentlyContinue }
}

<#
.SYNOPSIS
Returns the SHA-256 (hex) of a file inside an ext4 image, read with debugfs from a raw copy (journal replayed).
#>
function Get-LabImageFileHash {
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)][string]$Path,
        [Parameter(Mandatory)][string]$GuestPath
    )
    $tmp = Join-Path (Get-LabDir 'run') "img-$([guid]::NewGuid().ToString('N')).raw"
    $out = "$tmp.file"
    try {
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('convert', '-U', '-O', 'raw', $Path, $tmp)
        $null = Invoke-LabNative -FilePath 'e2fsck' -ArgumentList @('-E', 'journal_only', '-y', $tmp) -OkExitCode 0, 1
        $null = Invoke-LabNative -FilePath 'debugfs' -ArgumentList @('-R', "dump $GuestPath $out", $tmp)
        if (-not (Test-Path -LiteralPath $out)) { throw "debugfs could not dump $GuestPath from $Path" }
        (Get-FileHash -LiteralPath $out -Algorithm SHA256).Hash.ToLowerInvariant()
    }
    finally { Remove-Item -LiteralPath $tmp, $out -Force -ErrorAction SilentlyContinue }
}

<#
.SYNOPSIS
Returns the number of 'tick' lines in /ticks.log inside a lab boot disk image.
#>
function Get-LabImageTickCount {
    [CmdletBinding()]
    [OutputType([int])]
    param([Parameter(Mandatory)][string]$Path)
    $text = Get-LabImageFile -Path $Path -GuestPath '/ticks.log'
    [int]@($text -split "`n" | Where-Object { $_ -match '^tick \d+ \S+$' }).Count
}

<#
.SYNOPSIS
Runs e2fsck -fn on a raw copy of an image; returns Clean (exit code 0), ExitCode and Output.
#>
function Test-LabImageFileSystem {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$Path,
        [switch]$ReplayJournal
    )
    if (-not (Test-Path -LiteralPath $Path)) { throw "image $Path does not exist" }
    $tmp = Join-Path (Get-LabDir 'run') "fsck-$([guid]::NewGuid().ToString('N')).raw"
    try {
        $null = Invoke-LabNative -FilePath 'qemu-img' -ArgumentList @('convert', '-U', '-O', 'raw', $Path, $tmp)
        if ($ReplayJournal) { $null = Invoke-LabNative -FilePath 'e2fsck' -ArgumentList @('-E', 'journal_only', '-y', $tmp) -OkExitCode 0, 1 }
        $r = Invoke-LabNative -FilePath 'e2fsck' -ArgumentList @('-fn', $tmp) -AllowFailure
        if ($r.ExitCode -ge 8) { throw "command '$($r.Command)' failed with exit code $($r.ExitCode): $($r.StdErr.Trim())" }
        [pscustomobject]@{
            Path     = $Path
            Clean    = ($r.ExitCode -eq 0)
            ExitCode = $r.ExitCode
            Output   = ($r.StdOut + $r.StdErr).Replace($tmp, $Path)
        }
    }
    finally { Remove-Item -LiteralPath $tmp -Force -ErrorAction SilentlyContinue }
}

Export-ModuleMember -Function @(
    'Initialize-Lab', 'Install-LabPrerequisite', 'Start-LabDaemon', 'Stop-LabDaemon', 'Restart-LabDaemon',
    'Build-LabGuest', 'Reset-LabVm', 'Wait-LabGuestAgent', 'Invoke-LabGuestCommand', 'Stop-LabGuestAgent',
    'Get-LabImageFile', 'Get-LabImageTickCount', 'Test-LabImageFileSystem', 'Get-LabDiskPath', 'Get-LabRoot',
    'Remove-Lab', 'Invoke-LabVirsh', 'Get-LabVmLayout', 'Get-LabImageFileHash', 'Get-LabConsoleLogPath', 'Mount-LabXfs', 'Get-LabXfsFolder', 'Dismount-LabXfs'
)
