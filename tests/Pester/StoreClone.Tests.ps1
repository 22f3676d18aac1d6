#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# The stores' part of chain-free incrementals (issue 15) on the lab's real parts: the sshd on 127.0.0.1:2222 with
# its folder on the lab's XFS with reflink and on ext4, and a local destination on that XFS. A set's copy is cloned
# into the next set where it lies, changed blocks are written into the clone, and the server reads a copy back
# with its own tools. What the tests look at is read with the system's tools (df, cmp, sha256sum, stat, filefrag),
# never through the code under test. The stores are internal to the module: they are reached as
# tools/Measure-ZeroCheck.ps1 reaches them, through the built core assembly's public static members.
#   flock /var/lock/odakvm-lab.lock dotnet pwsh -NoProfile -File ./build.ps1 -Task Pester -PesterPath tests/Pester/StoreClone.Tests.ps1

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    $null = Start-LabSshd
    $script:Core = [Reflection.Assembly]::LoadFrom((Join-Path (Split-Path $ModuleManifest) 'OdaKvmBackup.Core.dll'))
    $script:None = [Threading.CancellationToken]::None
    $script:Runner = [Activator]::CreateInstance($Core.GetType('OdaKvmBackup.Core.Host.CliWrapProcessRunner', $true), @($Core.GetType('OdaKvmBackup.Core.Host.NullSink', $true)::Instance))
    $script:Stores = $Core.GetType('OdaKvmBackup.Core.Stores.BackupStores', $true)
    function Open-Store([string] $Location) { $Stores::Open($Location, $Runner, 'Destination') }
    function Wait-Task($Task) { $Task.GetAwaiter().GetResult() }

    function Invoke-Tool([string] $FilePath, [string[]] $Arguments) {
        $env:LC_ALL = 'C'
        $output = & $FilePath @Arguments 2>&1
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = ($output | ForEach-Object { "$_" }) -join "`n" }
    }
    # Bytes in use on the file system that holds $Path, as df counts them, after its writes reached the disk.
    function Get-UsedBytes([string] $Path) {
        $null = Invoke-Tool sync @('-f', $Path)
        [long]((Invoke-Tool df @('-B1', '--output=used', $Path)).Output -split "`n")[1].Trim()
    }
    function Get-Sha256([string] $Path) { ((Invoke-Tool sha256sum @($Path)).Output -split ' ')[0] }
    function Get-Times([string] $Path) { (Invoke-Tool stat @('-c', '%y|%z', $Path)).Output }
    function Get-FsType([string] $Path) { (Invoke-Tool stat @('-f', '-c', '%T', $Path)).Output }

    # A 96 MiB base in <folder>/run1/disk, as a copy of a set: 40 MiB of random data, a hole, 8 MiB of data, a hole
    # to the end; 0600.
    function New-BaseCopy([string] $Folder) {
        $run1 = New-Item -ItemType Directory -Force -Path (Join-Path $Folder 'run1')
        $null = New-Item -ItemType Directory -Force -Path (Join-Path $Folder 'run2')
        $file = Join-Path $run1 'disk'
        foreach ($piece in @(@{ Seek = 0; Count = 40 }, @{ Seek = 64; Count = 8 })) {
            (Invoke-Tool dd @('if=/dev/urandom', "of=$file", 'bs=1M', "seek=$($piece.Seek)", "count=$($piece.Count)", 'conv=notrunc,fsync', 'status=none')).ExitCode | Should -Be 0
        }
        (Invoke-Tool truncate @('-s', '96M', $file)).ExitCode | Should -Be 0
        [System.IO.File]::SetUnixFileMode($file, [System.IO.UnixFileMode]'UserRead, UserWrite')
        $file
    }

    # Writes 64 KiB of random bytes at each offset into the clone through the store (as an incremental copy writes
    # the blocks that changed), then returns the bytes the clone must hold: the base's, with those blocks.
    function Write-Changes($Store, [string] $BaseFile, [long[]] $Offsets) {
        $expected = [System.IO.File]::ReadAllBytes($BaseFile)
        $writer = Wait-Task $Store.OpenForWriteAsync('run2/disk.partial', $None)
        try {
            foreach ($offset in $Offsets) {
                $block = [System.Security.Cryptography.RandomNumberGenerator]::GetBytes(64KB)
                $null = Wait-Task $writer.WriteAsync($offset, [ReadOnlyMemory[byte]]::new($block), $None).AsTask()
                [Array]::Copy($block, 0, $expected, $offset, $block.Length)
            }
            $null = Wait-Task $writer.CompleteAsync($expected.Length, $None)
        }
        finally { $null = Wait-Task $writer.DisposeAsync().AsTask() }
        , $expected # one array, not its bytes one by one
    }

    function Get-BytesSha256([byte[]] $Bytes) { [Convert]::ToHexString([System.Security.Cryptography.SHA256]::HashData($Bytes)).ToLowerInvariant() }
}

Describe 'A set''s copy cloned into the next set where it lies, and written into' -Tag 'LabXfs', 'SshLab' {
    It 'on the SSH server''s XFS reflink folder: StoredAs reflink, the server''s used space does not grow by the file''s size, the base unchanged' {
        $folder = Join-Path (Get-LabSshXfsFolder) "clone-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        try {
            $base = New-BaseCopy $folder
            Get-FsType $folder | Should -Be 'xfs'
            $baseSum = Get-Sha256 $base
            $baseTimes = Get-Times $base
            $store = Open-Store "odakvm-backup:$folder"
            $before = Get-UsedBytes $folder

            $result = Wait-Task $store.CloneFileAsync('run1/disk', 'run2/disk.partial', $None)

            $grown = (Get-UsedBytes $folder) - $before
            $clone = Join-Path $folder 'run2/disk.partial'
            $result.StoredAs | Should -Be 'reflink'
            $result.SizeBytes | Should -Be 96MB
            $result.CopiedBytes | Should -Be 0
            Write-Host "[clone] ssh xfs: df grew by $grown bytes for a clone of 48 MiB of data"
            $grown | Should -BeLessThan 4MB -Because "the clone shares the base's 48 MiB of data (df grew by $grown bytes)"
            (Invoke-Tool cmp @($base, $clone)).ExitCode | Should -Be 0
            (Invoke-Tool filefrag @('-v', $clone)).Output | Should -Match 'shared'
            (& stat -c '%a' $clone) | Should -Be '600'

            $expected = Write-Changes $store $base @(0, 5MB, 44MB, 70MB)

            Get-Sha256 $clone | Should -Be (Get-BytesSha256 $expected)
            Get-Sha256 $base | Should -Be $baseSum
            Get-Times $base | Should -Be $baseTimes
            $grownAfter = (Get-UsedBytes $folder) - $before
            Write-Host "[clone] ssh xfs: df grew by $grownAfter bytes after 4 blocks of 64 KiB were written into the clone"
            $grownAfter | Should -BeLessThan 4MB -Because 'only the written blocks stop being shared'
            $null = Wait-Task $store.DisposeAsync().AsTask()
        }
        finally { Remove-Item -Recurse -Force -ErrorAction SilentlyContinue -LiteralPath $folder }
    }

    It 'on the SSH server''s ext4 folder: StoredAs local copy, sparse, byte-identical, the base unchanged' {
        $folder = New-TestFolder 'clone-ext4'
        $base = New-BaseCopy $folder
        Get-FsType $folder | Should -Be 'ext2/ext3'
        $baseSum = Get-Sha256 $base
        $baseTimes = Get-Times $base
        $store = Open-Store "odakvm-backup:$folder"

        $result = Wait-Task $store.CloneFileAsync('run1/disk', 'run2/disk.partial', $None)

        $clone = Join-Path $folder 'run2/disk.partial'
        $result.StoredAs | Should -Be 'local copy'
        $result.SizeBytes | Should -Be 96MB
        $result.CopiedBytes | Should -Be (Get-AllocatedBytes $clone)
        Get-AllocatedBytes $clone | Should -BeLessOrEqual (Get-AllocatedBytes $base) -Because 'the holes stay holes'
        (Invoke-Tool cmp @($base, $clone)).ExitCode | Should -Be 0
        (& stat -c '%a' $clone) | Should -Be '600'

        $expected = Write-Changes $store $base @(5MB, 44MB)

        Get-Sha256 $clone | Should -Be (Get-BytesSha256 $expected)
        Get-Sha256 $base | Should -Be $baseSum
        Get-Times $base | Should -Be $baseTimes
        $null = Wait-Task $store.DisposeAsync().AsTask()
    }

    It 'on a local destination on the XFS with reflink: StoredAs reflink, no space used, the base unchanged' {
        $folder = Join-Path (Get-LabXfsFolder -Name local) "clone-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        try {
            $base = New-BaseCopy $folder
            $baseSum = Get-Sha256 $base
            $baseTimes = Get-Times $base
            $store = Open-Store $folder
            $before = Get-UsedBytes $folder

            $result = Wait-Task $store.CloneFileAsync('run1/disk', 'run2/disk.partial', $None)

            $grown = (Get-UsedBytes $folder) - $before
            $result.StoredAs | Should -Be 'reflink'
            $grown | Should -BeLessThan 4MB -Because "the clone shares the base's 48 MiB of data (df grew by $grown bytes)"
            $expected = Write-Changes $store $base @(0, 70MB)
            Get-Sha256 (Join-Path $folder 'run2/disk.partial') | Should -Be (Get-BytesSha256 $expected)
            Get-Sha256 $base | Should -Be $baseSum
            Get-Times $base | Should -Be $baseTimes
        }
        finally { Remove-Item -Recurse -Force -ErrorAction SilentlyContinue -LiteralPath $folder }
    }
}

Describe 'Segment digests computed by the SSH server' -Tag 'SshLab' {
    It 'are computed there with python3 and equal dd ... | sha256sum of each 16 MiB segment, holes and the short last one included' {
        $folder = New-TestFolder 'server-digests'
        $file = Join-Path $folder 'disk'
        (Invoke-Tool dd @('if=/dev/urandom', "of=$file", 'bs=1M', 'count=20', 'conv=fsync', 'status=none')).ExitCode | Should -Be 0
        (Invoke-Tool dd @('if=/dev/urandom', "of=$file", 'bs=1M', 'seek=48', 'count=3', 'conv=notrunc,fsync', 'status=none')).ExitCode | Should -Be 0
        (Invoke-Tool truncate @('-s', (64MB + 12345), $file)).ExitCode | Should -Be 0
        $store = Open-Store "odakvm-backup:$folder"
        $indexes = [long[]]@(4, 0, 2, 1, 3)

        $digests = @(Wait-Task $store.SegmentDigestsAsync('disk', 16MB, $indexes, $None))

        $store.DigestTool | Should -Be 'python3'
        $digests.Count | Should -Be $indexes.Count
        for ($i = 0; $i -lt $indexes.Count; $i++) {
            $expected = ((& sh -c "dd if='$file' bs=16M skip=$($indexes[$i]) count=1 2>/dev/null | sha256sum") -split ' ')[0]
            $digests[$i] | Should -Be $expected -Because "segment $($indexes[$i])"
        }
        $null = Wait-Task $store.DisposeAsync().AsTask()
    }
}
