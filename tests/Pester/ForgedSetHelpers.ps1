# Dot-sourced by the tests of the way back against forged backup sets (issue 13): a backup server is less protected
# than the host it serves, so a test plays its attacker. New-ForgedSet copies a real set, lets the test tamper with
# its manifest and files, then recomputes every digest the way an attacker would: with the algorithm the help
# documents (about_OdaKvmBackup, Copy-VmDisk NOTES; for Format OdaKvmBackup/3 sets the block digest list beside each
# copy), written here independently of the module. A forged set is
# therefore never refused for a wrong digest: only the checks that matter can stop it.

if (-not ('OdaKvmBackupTests.ForgedDigest' -as [type])) {
    Add-Type -TypeDefinition @'
using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Security.Cryptography;

namespace OdaKvmBackupTests
{
    public static class ForgedDigest
    {
        const int Block = 4096;

        /// <summary>ContentDigest as documented: SHA-256 over (offset as int64 LE, block bytes) for every 4 KiB
        /// block that holds a non-zero byte, in file order, then the file size as int64 LE; lower-case hex.
        /// Also returns the bytes in such blocks (DataBytes).</summary>
        public static string Content(string path, out long size, out long dataBytes)
        {
            using var file = File.OpenRead(path);
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[Block];
            var offsetBytes = new byte[8];
            long offset = 0;
            dataBytes = 0;
            int n;
            while ((n = ReadBlock(file, buffer)) > 0)
            {
                if (Array.FindIndex(buffer, 0, n, b => b != 0) >= 0)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(offsetBytes, offset);
                    hash.AppendData(offsetBytes);
                    hash.AppendData(buffer, 0, n);
                    dataBytes += n;
                }
                offset += n;
            }
            size = offset;
            BinaryPrimitives.WriteInt64LittleEndian(offsetBytes, size);
            hash.AppendData(offsetBytes);
            return Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
        }

        /// <summary>SegmentDigests as documented: sha256sum of each segment that holds a non-zero byte, by index.</summary>
        public static SortedDictionary<long, string> Segments(string path, long segmentSize)
        {
            var result = new SortedDictionary<long, string>();
            using var file = File.OpenRead(path);
            var buffer = new byte[segmentSize];
            for (long index = 0; ; index++)
            {
                var n = 0;
                int r;
                while (n < buffer.Length && (r = file.Read(buffer, n, buffer.Length - n)) > 0)
                    n += r;
                if (n == 0)
                    break;
                if (Array.FindIndex(buffer, 0, n, b => b != 0) >= 0)
                    result[index] = Convert.ToHexString(SHA256.HashData(buffer.AsSpan(0, n))).ToLowerInvariant();
                if (n < buffer.Length)
                    break;
            }
            return result;
        }

        /// <summary>The block digest list as about_OdaKvmBackup documents it (Format OdaKvmBackup/3): magic
        /// OKVMDIG1, uint32 block size 65536, uint32 blocks per segment 256, int64 file size, int64 block count,
        /// int64 segment count (little-endian), then the first 6 bytes of the SHA-256 of each 64 KiB block, then the
        /// SHA-256 of each 16 MiB segment (a short last block or segment hashed as it is).</summary>
        public static byte[] DigestList(string path)
        {
            const int ListBlock = 65536, PerSegment = 256;
            const long Segment = (long)ListBlock * PerSegment;
            var size = new FileInfo(path).Length;
            var blocks = (size + ListBlock - 1) / ListBlock;
            var segments = (size + Segment - 1) / Segment;
            using var list = new MemoryStream();
            var header = new byte[40];
            "OKVMDIG1"u8.CopyTo(header);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), ListBlock);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), PerSegment);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(16), size);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(24), blocks);
            BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(32), segments);
            list.Write(header);
            var segmentHashes = new List<byte[]>();
            using (var file = File.OpenRead(path))
            using (var segmentHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var buffer = new byte[ListBlock];
                long done = 0;
                int n;
                while ((n = ReadBlock(file, buffer)) > 0)
                {
                    list.Write(SHA256.HashData(buffer.AsSpan(0, n)), 0, 6);
                    segmentHash.AppendData(buffer, 0, n);
                    done += n;
                    if (done % Segment == 0 || done == size)
                        segmentHashes.Add(segmentHash.GetHashAndReset());
                }
            }
            foreach (var digest in segmentHashes)
                list.Write(digest);
            return list.ToArray();
        }

        static int ReadBlock(Stream s, byte[] buffer)
        {
            var n = 0;
            int r;
            while (n < buffer.Length && (r = s.Read(buffer, n, buffer.Length - n)) > 0)
                n += r;
            return n;
        }
    }
}
'@
}

<#
.SYNOPSIS
    Copies a real backup set and tampers with it as an attacker who controls the store would.
.PARAMETER From
    The folder of a real set (<destination>/<vm>/<run id>).
.PARAMETER Destination
    The store root the forged set goes under (a local folder; for the lab's SSH server, its folder on this host).
.PARAMETER DomainName
    The VM folder name to put it under, also written into the manifest (default: the real set's).
.PARAMETER RunId
    The run-id folder name, also written into the manifest (default: the real set's).
.PARAMETER Tamper
    { param($Folder, $Manifest) ... } runs after the copy and before the digests are recomputed: change the
    manifest object ($Manifest.Disks[0].File = '../x'), replace files in $Folder, plant links or FIFOs.
.PARAMETER KeepDigests
    Do not recompute the digests (a set whose copies no longer match what its manifest says).
.OUTPUTS
    The forged set's folder.
.NOTES
    For each disk, the data the digests are computed over is "$Folder/$($disk.File)", joined as a string: a File
    of '/etc/cron.d/x' is digested from "$Folder/etc/cron.d/x", where an attacker controlling the server would put
    it. Disks whose data file is missing keep their digests.
#>
function New-ForgedSet {
    param(
        [Parameter(Mandatory)] [string] $From,
        [Parameter(Mandatory)] [string] $Destination,
        [string] $DomainName,
        [string] $RunId,
        [scriptblock] $Tamper,
        [switch] $KeepDigests
    )
    $manifest = Get-Content -Raw -LiteralPath (Join-Path $From 'backup.json') | ConvertFrom-Json
    # A forged set agrees with the folders it sits in, as an attacker would make it (the Tamper block may differ).
    if ($DomainName) { $manifest.DomainName = $DomainName } else { $DomainName = $manifest.DomainName }
    if ($RunId) { $manifest.RunId = $RunId } else { $RunId = $manifest.RunId }
    $folder = Join-Path $Destination "$DomainName/$RunId"
    New-Item -ItemType Directory -Force -Path $folder | Out-Null
    Get-ChildItem -LiteralPath $From -File | Where-Object Name -ne 'backup.json' |
        ForEach-Object { & cp --sparse=always $_.FullName (Join-Path $folder $_.Name); if ($LASTEXITCODE) { throw "cp failed: $($_.FullName)" } }
    if ($Tamper) { & $Tamper $folder $manifest }
    if (-not $KeepDigests) {
        foreach ($disk in @($manifest.Disks)) {
            if ($null -eq $disk -or -not ($disk.PSObject.Properties.Name -contains 'File') -or -not $disk.File) { continue }
            $data = "$folder/$($disk.File)"
            if (-not (Test-Path -LiteralPath $data -PathType Leaf)) { continue }
            $size = 0L; $dataBytes = 0L
            $contentDigest = [OdaKvmBackupTests.ForgedDigest]::Content($data, [ref]$size, [ref]$dataBytes)
            if ($disk.PSObject.Properties.Name -contains 'Digests' -and $null -ne $disk.Digests) {
                # Format OdaKvmBackup/3: the list beside the copy and its SHA-256 in the manifest, as documented.
                $list = [OdaKvmBackupTests.ForgedDigest]::DigestList($data)
                [System.IO.File]::WriteAllBytes("$data.digests", $list)
                $disk.Digests = [Convert]::ToHexString([System.Security.Cryptography.SHA256]::HashData($list)).ToLowerInvariant()
            }
            else {
                $disk.ContentDigest = $contentDigest
            }
            $disk.SizeBytes = $size
            $disk.DataBytes = $dataBytes
            if ($disk.PSObject.Properties.Name -contains 'SegmentDigests' -and $null -ne $disk.SegmentDigests) {
                $segments = [ordered]@{}
                foreach ($pair in [OdaKvmBackupTests.ForgedDigest]::Segments($data, [long]$disk.SegmentSize).GetEnumerator()) { $segments["$($pair.Key)"] = $pair.Value }
                $disk.SegmentDigests = [pscustomobject]$segments
            }
        }
    }
    $manifest | ConvertTo-Json -Depth 20 | Set-Content -LiteralPath (Join-Path $folder 'backup.json')
    $folder
}

# The files of a folder tree with their SHA-256, to prove that nothing outside the restore or state folders changed.
function Get-TreeState([string] $Path) {
    if (-not (Test-Path -LiteralPath $Path)) { return @() }
    @(Get-ChildItem -LiteralPath $Path -Recurse -Force -File -ErrorAction SilentlyContinue | Sort-Object FullName |
        ForEach-Object { '{0} {1}' -f $_.FullName, (Get-FileHash -LiteralPath $_.FullName -Algorithm SHA256).Hash })
}
